"""`seem-ray study CONFIG | report NAME | compare A B`: argparse wiring over the study modules.

Flow position: the command line -> **these handlers** -> run / report / compare. Bad input is
raised as ConfigError; :func:`seem_ray.cli.run_command` turns it into one line and exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seem_ray.config import ConfigError, load_sweep_config, parse_set_expressions
from seem_ray.study.report import best_trials_table, compare_studies, dashboard_hint, write_report
from seem_ray.study.run import prepare_study, run_study
from seem_ray.study.storage import counts_toward_budget, load_study

__all__ = ["register"]


def _cmd_study(args: argparse.Namespace) -> int:
    if args.target == "report":
        if len(args.names) != 1:
            raise ConfigError("", "usage: seem-ray study report NAME [--storage URL] [--out DIR]")
        report = write_report(
            args.names[0],
            storage_url=args.storage,
            out=Path(args.out) if args.out else None,
            mlflow=not args.no_mlflow,
        )
        print(report.text)
        print(
            f"report: {report.out_dir}"
            + (f" (MLflow run {report.mlflow_run_id})" if report.mlflow_run_id else "")
        )
        return 0
    if args.target == "compare":
        if len(args.names) < 2:
            raise ConfigError(
                "", "usage: seem-ray study compare NAME_A NAME_B [...] [--storage URL]"
            )
        print(compare_studies(args.names, args.storage))
        return 0
    if args.names:
        raise ConfigError(
            "", f"unexpected arguments {args.names}; usage: seem-ray study CONFIG [--resume] [...]"
        )
    overrides = parse_set_expressions(args.set)
    if args.name:
        overrides["name"] = args.name
        overrides["optuna.study_name"] = args.name
    sweep = load_sweep_config(args.target, overrides)
    plan = prepare_study(sweep, storage_url=args.storage, resume=args.resume)
    if plan.remaining > 0:
        from seem_ray.tune import init_ray

        init_ray(args.address)
    run = run_study(plan, quiet=args.quiet)
    if run.sweep_summary is not None:
        print(run.sweep_summary.table())
    study = load_study(plan.study_name, plan.storage_url)
    print(best_trials_table(study))
    print(
        f"study {plan.study_name}: {sum(counts_toward_budget(t) for t in study.trials)}/{plan.budget} trials done"
    )
    print(dashboard_hint(plan.storage_url))
    return 0


def register(sub: Any) -> None:
    """Add `seem-ray study` (run CONFIG | report NAME | compare A B) to the CLI's subparsers."""
    p = sub.add_parser(
        "study",
        help="persistent Optuna study over critic architectures (CONFIG | report NAME | compare A B)",
        usage=(
            "seem-ray study CONFIG [--set K=V] [--name N] [--storage URL] [--resume] [--address A] [--quiet]\n"
            "       seem-ray study report NAME [--storage URL] [--out DIR] [--no-mlflow]\n"
            "       seem-ray study compare NAME_A NAME_B [...] [--storage URL]"
        ),
    )
    p.add_argument("target", help="study YAML (tune_configs/study_*.yaml), or 'report' / 'compare'")
    p.add_argument("names", nargs="*", help="study name(s) for report / compare")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep field"
    )
    p.add_argument(
        "--name", help="study (and sweep) name; default: optuna.study_name or the sweep name"
    )
    p.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<runs>/studies/optuna.db)")
    p.add_argument("--resume", action="store_true", help="continue the study (also after kill -9)")
    p.add_argument("--address", default=None, help="Ray address (auto/local/host:port)")
    p.add_argument("--quiet", action="store_true", help="no live Tune table")
    p.add_argument("--out", help="report folder (default: <runs>/studies/NAME/report)")
    p.add_argument("--no-mlflow", action="store_true", help="report: do not log to MLflow")
    p.set_defaults(func=_cmd_study)
