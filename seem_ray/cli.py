"""The `seem-ray` command: sweep | study | train | datasets | seem | ui.

Exit codes: 0 success, 2 bad input (one line on stderr saying what and how to fix it), 1 a run
that failed for another reason (the log has the details; a disk that filled up or stopped
accepting writes mid-run is one line too, saying how to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from seem_ray.checkpoint import CheckpointError
from seem_ray.config import ConfigError, load_run_config, parse_set_expressions
from seem_ray.data.batches import DataError
from seem_ray.runtime import RunFolderError, StorageError, runs_dir, setup_logging

__all__ = ["main"]

log = logging.getLogger("seem_ray.cli")

BAD_INPUT: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    FileExistsError,
    FileNotFoundError,
    RunFolderError,
)


# ----------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    if args.resume and (args.ray or args.workers):
        raise ConfigError(
            "--resume",
            "only for single-process runs; a Ray Train run resumes by itself when started again "
            "with the same --run-dir",
        )
    cfg = load_run_config(args.config, parse_set_expressions(args.set))
    if args.workers:
        from seem_ray.config import apply_overrides

        cfg = apply_overrides(cfg, {"scaling.num_workers": args.workers})
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else runs_dir() / "train" / (args.name or Path(args.config or "default").stem)
    )
    if args.ray or args.workers:
        from seem_ray.data.generate import ensure_dataset
        from seem_ray.train import TrainFailure, fit
        from seem_ray.tune import init_ray

        ensure_dataset(cfg.data.dataset)
        init_ray(args.address)
        try:
            metrics = fit(cfg, name=run_dir.name, storage_path=run_dir.parent)
        except TrainFailure as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(
            json.dumps({k: v for k, v in metrics.items() if isinstance(v, int | float)}, indent=2)
        )
        return 0
    from seem_ray.data.generate import ensure_dataset
    from seem_ray.runner import run_local

    ensure_dataset(cfg.data.dataset)
    summary = run_local(cfg, run_dir, resume=args.resume)
    print(
        f"run folder: {summary.run_dir}  stop reason: {summary.stop_reason}  steps: {summary.steps}"
    )
    return 0


# ----------------------------------------------------------------------------- seem
def _cmd_seem(args: argparse.Namespace) -> int:
    """SEEM of a run folder's latest checkpoint on its fixed probe (with the top eigenvalues)."""
    import torch

    from seem_ray.checkpoint import config_fingerprint, load_checkpoint
    from seem_ray.loop import TrainingRun, prepare_data
    from seem_ray.seem import compute_seem, probe_critic

    run_dir = Path(args.run_dir)
    cfg = load_run_config(run_dir / "config.yaml")
    data = prepare_data(cfg)
    run = TrainingRun(cfg, data, torch.device("cpu"))
    run.load_state_dict(
        load_checkpoint(run_dir / "checkpoint", config_fingerprint(run.fingerprint_parts()))
    )
    with torch.no_grad():
        next_act = run.algo.next_actions(run.probe.next_obs)
    res = compute_seem(
        probe_critic(run.algo.critic, cfg.seem.head),
        run.probe.obs,
        run.probe.act,
        run.probe.next_obs,
        next_act,
        gamma=cfg.algo.gamma,
        done=run.probe.done,
        mask_terminals=args.mask_terminals or cfg.seem.mask_terminals,
        eig=args.eig,
        top_k=args.top_k,
    )
    out = {
        "step": run.step,
        "seem": res.seem,
        "max_eig": res.max_eig,
        "frob": res.frob,
        "n": res.n,
        "seconds": round(res.seconds, 4),
        "method": res.method,
        "eig_method": res.eig_method,
        "top_eigs": [[float(complex(e).real), float(complex(e).imag)] for e in res.top_eigs],
    }
    print(json.dumps(out, indent=2))
    return 0


# ----------------------------------------------------------------------------- ui
def _cmd_ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI for the default store, bound to 127.0.0.1 unless --host says otherwise."""
    from seem_ray.tracking import resolve_tracking_uri

    uri = args.backend_store_uri or resolve_tracking_uri(None)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(
        f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C to stop",
        file=sys.stderr,
    )
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


# ----------------------------------------------------------------------------- sweep / study
def _cmd_sweep(args: argparse.Namespace) -> int:
    from seem_ray import tune as sweep_mod

    argv = []
    if args.config:
        argv += ["--config", args.config]
    for s in args.set:
        argv += ["--set", s]
    if args.resume:
        argv.append("--resume")
    if args.address:
        argv += ["--address", args.address]
    if args.name:
        argv += ["--name", args.name]
    if args.quiet:
        argv.append("--quiet")
    return sweep_mod.main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seem-ray", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train", help="train one run (single process; --workers N for Ray Train DDP)"
    )
    p.add_argument(
        "config",
        nargs="?",
        help="run YAML (fields of seem_ray.config.RunConfig); default: built-in defaults",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. algo.gamma=0.95",
    )
    p.add_argument("--run-dir", help="output folder (default: runs/train/<config name>)")
    p.add_argument("--name", help="run name when --run-dir is not given")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run folder's checkpoint"
    )
    p.add_argument("--workers", type=int, default=0, help="Ray Train workers (implies --ray)")
    p.add_argument("--ray", action="store_true", help="run through Ray Train even with one worker")
    p.add_argument("--address", default=None, help="Ray address (auto/local/host:port)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="run a Tune sweep (see seem_ray/tune.py)")
    p.add_argument(
        "config", nargs="?", help="sweep YAML (tune_configs/*.yaml); default: the demo sweep"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--address", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("seem", help="SEEM of a run folder's latest checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--eig", default="auto", choices=["auto", "dense", "mixed"])
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--mask-terminals", action="store_true")
    p.set_defaults(func=_cmd_seem)

    p = sub.add_parser("ui", help="MLflow UI for the default store (127.0.0.1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", default=None)
    p.set_defaults(func=_cmd_ui)

    from seem_ray.data.commands import register as register_datasets

    register_datasets(sub)
    from seem_ray.study.commands import register as register_study

    register_study(sub)
    return parser


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand, turning bad input into one line and exit code 2."""
    try:
        return int(func(args) or 0)
    except BAD_INPUT as err:
        print(
            f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            file=sys.stderr,
        )
        return 2
    except StorageError as err:  # not bad input, but the user must act: one line, no traceback
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
