"""Command-line interface: ``python -m dlas_dse <command>`` (or ``dlas-dse <command>``)."""

from __future__ import annotations

import argparse
import os
import sys

DATA_DIR_VARIABLE = "DLAS_DATA_DIR"

EXAMPLES = """\
examples:
  python -m dlas_dse list                              studies and search spaces
  python -m dlas_dse optimize --study quickstart       run (or resume) a study
  python -m dlas_dse optimize --study quickstart --n-trials 20 --sampler tpe
  python -m dlas_dse show --study quickstart           trials and the Pareto front

A study (studies/NAME.yaml) names a search space (search_spaces/NAME.yaml) over the six DLAS
layers - dataset, model, compression, algorithm, software, hardware - and the objectives
accuracy (max), latency_ms (min) and size_bytes (min). Results go to the study's storage
(default: results/NAME.db); artifacts are cached in results/cache (DLAS_CACHE_DIR).
"""


def _positive(kind: type):
    """An argparse type accepting numbers above zero."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dlas_dse", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Design-space exploration across the Deep Learning Acceleration Stack.",
        epilog=EXAMPLES)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    optimize = commands.add_parser(
        "optimize", help="run or resume a multi-objective study",
        description="Run a study; rerunning the same command resumes it (finished trials are kept, "
                    "an interrupted one is retried).")
    optimize.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    optimize.add_argument("--n-trials", type=_positive(int), help="finished trials to reach (default: the study's n_trials)")
    optimize.add_argument("--storage", help="SQLAlchemy URL (default: the study's, e.g. sqlite:///results/NAME.db)")
    optimize.add_argument("--sampler", choices=["nsga2", "tpe", "random", "grid"], help="override the study's sampler")
    optimize.add_argument("--timeout", type=_positive(float), metavar="SECONDS", help="stop starting new trials after this long")
    optimize.add_argument("--data-dir", help=f"folder holding cifar-10-batches-py/ and imagenet/val/ "
                          f"(default: ${DATA_DIR_VARIABLE} or ./data)")
    optimize.add_argument("--weights", help="checkpoint to use instead of training: sets model.weights "
                          "({architecture} and {dataset} are replaced; 'torchvision' = pretrained)")
    optimize.add_argument("--no-progress", action="store_true", help="no progress bar (one line per trial only)")

    show = commands.add_parser("show", help="print a study's trials and Pareto front")
    show.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    show.add_argument("--storage", help="SQLAlchemy URL (default: the study's)")

    commands.add_parser("list", help="list the available studies and search spaces")
    return parser


def _optimize(args: argparse.Namespace) -> int:
    from dlas_dse.config import check_grid, check_storage_url, load_study
    from dlas_dse.report import describe_study
    from dlas_dse.study import run_study

    config = load_study(args.study)
    if args.sampler == "grid":
        check_grid(config.space, "command line", "--sampler grid")
    if args.storage:
        check_storage_url(args.storage, "command line", "--storage")
    if args.weights:
        config.space = config.space.with_fixed("model.weights", args.weights)
    print(f"study {config.name}: space {config.space.name}, sampler {args.sampler or config.sampler}, "
          f"storage {args.storage or config.storage}")
    study = run_study(config, n_trials=args.n_trials, storage_url=args.storage, sampler=args.sampler,
                      timeout_s=args.timeout, progress=not args.no_progress)
    print()
    print(describe_study(study))
    return 0


def _show(args: argparse.Namespace) -> int:
    import optuna

    from dlas_dse.config import load_study
    from dlas_dse.report import describe_study
    from dlas_dse.study import open_storage

    config = load_study(args.study)
    storage_url = args.storage or config.storage
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(storage_url))
    except KeyError:
        print(f"no study {config.name!r} in {storage_url}; run `python -m dlas_dse optimize "
              f"--study {args.study}` first", file=sys.stderr)
        return 1
    print(describe_study(study))
    return 0


def _list(args: argparse.Namespace) -> int:
    from dlas_dse.config import available

    for folder, title in (("studies", "studies (python -m dlas_dse optimize --study NAME)"),
                          ("search_spaces", "search spaces")):
        print(f"{title}:")
        for name, description in available(folder):
            print(f"  {name:<20} {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for configuration errors)."""
    args = _parser().parse_args(argv)
    from dlas_dse.config import ConfigError
    from dlas_dse.registry import PreflightError

    if getattr(args, "data_dir", None):
        os.environ[DATA_DIR_VARIABLE] = str(args.data_dir)
    try:
        return {"optimize": _optimize, "show": _show, "list": _list}[args.command](args)
    except (ConfigError, PreflightError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
        return 130
