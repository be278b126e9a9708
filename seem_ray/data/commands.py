"""The ``seem-ray datasets`` subcommand: make, list and inspect local Minari datasets.

Flow position: before any trial; it produces the datasets that ``data.dataset`` names.
``seem_ray.cli`` calls :func:`register` and maps DataError/ConfigError to exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from seem_ray.data.generate import make_dataset
from seem_ray.data.minari import dataset_summary, list_local_datasets
from seem_ray.data.recipes import RECIPES
from seem_ray.runtime import datasets_dir

__all__ = ["register"]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_make(args: argparse.Namespace) -> int:
    """`datasets make NAME`: generate a recipe's dataset and print its id."""
    dataset_id = make_dataset(
        args.name,
        episodes=args.episodes,
        steps=args.steps,
        episode_steps=args.episode_steps,
        ref_episodes=args.ref_episodes,
        start_steps=args.start_steps,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    summary = dataset_summary(dataset_id)
    _out(
        f"{dataset_id}: {summary['episodes']} episodes, {summary['transitions']} transitions, "
        f"ref scores {_fmt(summary['ref_min_score'])}..{_fmt(summary['ref_max_score'])}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """`datasets list`: local datasets (with counts, dims, reference scores) and recipes."""
    ids = list_local_datasets()
    _out(f"local datasets in {datasets_dir()}:")
    if not ids:
        _out("  (none)")
    for dataset_id in ids:
        s = dataset_summary(dataset_id)
        _out(
            f"  {dataset_id}: {s['episodes']} episodes, {s['transitions']} transitions, "
            f"obs {s['obs_dim']}, act {s['act_dim']}, "
            f"ref {_fmt(s['ref_min_score'])}..{_fmt(s['ref_max_score'])}"
        )
    _out("recipes (seem-ray datasets make NAME):")
    for name, recipe in RECIPES.items():
        _out(f"  {name}: {recipe.description}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """`datasets info ID`: the dataset summary as JSON."""
    _out(json.dumps(dataset_summary(args.dataset_id), indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``datasets`` parser (make/list/info) to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "datasets", help="make, list and inspect local Minari datasets", description=__doc__
    )
    sub = parser.add_subparsers(dest="datasets_command", required=True)

    make = sub.add_parser("make", help="generate a dataset from a recipe")
    make.add_argument("name", help=f"recipe: {', '.join(RECIPES)}")
    make.add_argument("--seed", type=int, default=0, help="seed of envs, policies and noise")
    make.add_argument(
        "--episodes", type=int, default=None, help="maze: episodes; random: whole episodes"
    )
    make.add_argument(
        "--steps", type=int, default=None, help="total env steps (replay: online TD3 steps)"
    )
    make.add_argument(
        "--episode-steps", type=int, default=None, help="maze: steps per collected episode"
    )
    make.add_argument(
        "--ref-episodes", type=int, default=10, help="episodes per measured reference score"
    )
    make.add_argument(
        "--start-steps", type=int, default=None, help="replay: random steps before TD3 acts"
    )
    make.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    make.set_defaults(func=cmd_make)

    lst = sub.add_parser("list", help="local datasets and known recipes")
    lst.set_defaults(func=cmd_list)

    info = sub.add_parser("info", help="summary of one dataset")
    info.add_argument("dataset_id", help="Minari id, e.g. seem_ray/pointmaze-umaze-dense-v0")
    info.set_defaults(func=cmd_info)
