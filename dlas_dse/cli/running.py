"""The commands that run trials: ``optimize``, ``grid``, ``worker`` and ``remeasure``."""

from __future__ import annotations

import argparse
import sys

from dlas_dse.cli.arguments import positive, study_arguments, trial_arguments, weights_argument, weights_override
from dlas_dse.samplers import SAMPLERS

REMEASURE_ROUNDS = 10


def add_parsers(commands) -> None:
    """Add the commands that run trials to the CLI's sub-commands."""
    optimize = commands.add_parser(
        "optimize", help="run or resume a multi-objective study",
        description="Run a study; rerunning the same command resumes it (finished trials are kept, "
                    "an interrupted one is retried).")
    optimize.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    optimize.add_argument("--n-trials", type=positive(int), help="finished trials to reach (default: the study's n_trials)")
    optimize.add_argument("--storage", help="SQLAlchemy URL (default: the study's, e.g. sqlite:///results/NAME.db)")
    optimize.add_argument("--sampler", choices=SAMPLERS.names(),
                          help="override the study's sampler (surrogate: XGBoost-assisted, see `surrogate --help`)")
    optimize.add_argument("--timeout", type=positive(float), metavar="SECONDS", help="stop starting new trials after this long")
    weights_argument(optimize)
    optimize.add_argument("--hardware", metavar="DEVICE", help="run the space on this device instead of the one it "
                          "names (a name from `python -m dlas_dse devices`, e.g. host-cpu)")
    trial_arguments(optimize)
    optimize.set_defaults(run=_optimize)

    grid = commands.add_parser(
        "grid", help="run every valid point of a study's space exactly once (or plan it with --dry-run)",
        description="Exhaustive grid mode: every valid combination of the space runs once; rerunning resumes. "
                    "--dry-run prints the points per layer and in total and how often each expensive stage "
                    "runs once the artifact cache shares it, without running anything or needing the data.")
    grid.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    grid.add_argument("--dry-run", action="store_true", help="plan only: count points and shared stages")
    grid.add_argument("--datasets", nargs="+", metavar="NAME", help="replace the space's datasets (e.g. digits)")
    grid.add_argument("--models", nargs="+", metavar="NAME", help="replace the space's models")
    grid.add_argument("--hardware", nargs="+", metavar="DEVICE", help="replace the space's devices")
    grid.add_argument("--storage", help="SQLAlchemy URL (default: the study's)")
    weights_argument(grid)
    trial_arguments(grid)
    grid.set_defaults(run=_grid)

    worker = commands.add_parser(
        "worker", help="join a study in a shared storage and run its trials until none is left",
        description="Join a study (e.g. a grid) in a storage every worker can reach, such as PostgreSQL, and take "
                    "its points until none is left. Start one per machine (or per core group); each grid point "
                    "runs exactly once across workers, and a dead worker's point is retried by another after "
                    "the heartbeat grace period. Share the artifact cache through DLAS_CACHE_DIR on a shared "
                    "directory to reuse trainings, builds and tuning across machines.")
    worker.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    worker.add_argument("--storage", required=True, help="SQLAlchemy URL every worker reaches, e.g. "
                        "postgresql://user@dbhost/dlas")
    trial_arguments(worker, remeasure=False)
    worker.set_defaults(run=_worker)

    remeasure = commands.add_parser(
        "remeasure", help="re-time the Pareto front (or every trial) side by side: confirmed latencies",
        description="Time the trials on the study's Pareto front, and every trial within 5% of it, again in "
                    "alternating rounds in one process (each round one interference-checked window per trial), "
                    "and store each one's confirmed latency (median of the rounds) with a 95% bootstrap interval. "
                    "show, report and the observations use confirmed figures where present. Resumable (rounds are "
                    "stored as they finish) and idempotent: a confirmed trial is not timed again. optimize and grid "
                    "run it on the front when they finish (--no-remeasure skips that).")
    study_arguments(remeasure)
    scope = remeasure.add_mutually_exclusive_group()
    scope.add_argument("--front", action="store_true", help="the front and trials within 5%% of it (default)")
    scope.add_argument("--all", action="store_true", help="every complete trial")
    remeasure.add_argument("--rounds", type=positive(int), default=REMEASURE_ROUNDS,
                           help=f"rounds per trial (default: {REMEASURE_ROUNDS})")
    remeasure.add_argument("--no-progress", action="store_true", help="no progress bar")
    remeasure.set_defaults(run=_remeasure)


def _optimize(args: argparse.Namespace) -> int:
    from dlas_dse.config import check_grid, load_study
    from dlas_dse.analysis.report import describe_study
    from dlas_dse.study.storage import mask_url
    from dlas_dse.study.loop import run_study

    overrides = {**({"hardware.device": args.hardware} if args.hardware else {}), **weights_override(args.weights)}
    config = load_study(args.study, overrides)
    if args.sampler == "grid":
        check_grid(config.space, "command line", "--sampler grid")
    print(f"study {config.name}: space {config.space.name}, sampler {args.sampler or config.sampler}, "
          f"storage {mask_url(args.storage or config.storage)}")
    study = run_study(config, n_trials=args.n_trials, storage_url=args.storage, sampler=args.sampler,
                      timeout_s=args.timeout, progress=not args.no_progress)
    _confirm_front(config, study, args)
    print()
    print(describe_study(study))
    return 0


def _choices(values: list[str]):
    """A command-line list as a space value: fixed for one, choices for more."""
    return values[0] if len(values) == 1 else {"choices": list(values)}


def _grid(args: argparse.Namespace) -> int:
    from dlas_dse.config import check_grid, load_study
    from dlas_dse.grid import plan_grid
    from dlas_dse.registry import PreflightError
    from dlas_dse.analysis.report import describe_study
    from dlas_dse.stack.devices import create_device

    overrides = {name: _choices(values) for name, values in (
        ("dataset.name", args.datasets), ("model.architecture", args.models), ("hardware.device", args.hardware))
        if values}
    config = load_study(args.study, {**overrides, **weights_override(args.weights)})
    check_grid(config.space, config.source, "space")
    plan = plan_grid(config.space)
    status = {name: create_device({"device": name, "threads": 0}).status() for name in plan.per_platform}
    print(f"study {config.name}: space {config.space.name}\n{plan.describe(status)}")
    if args.dry_run:
        return 0
    unreachable = [name for name, (usable, _) in status.items() if not usable]
    if unreachable:
        reachable = " ".join(name for name in status if name not in unreachable)
        raise PreflightError(f"the grid's platforms {', '.join(unreachable)} cannot be reached now (above: why); "
                             + (f"run the others with `grid --study {args.study} --hardware {reachable}`"
                                if reachable else "bring them up first (python -m dlas_dse devices)"))
    from dlas_dse.study.loop import run_study  # imports PyTorch and TVM: not for a dry run

    study = run_study(config, storage_url=args.storage, sampler="grid", progress=not args.no_progress)
    _confirm_front(config, study, args)
    print()
    print(describe_study(study))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from dlas_dse.config import load_study
    from dlas_dse.study.storage import mask_url
    from dlas_dse.study.loop import run_study

    config = load_study(args.study)
    print(f"worker for study {config.name} ({config.sampler}) on {mask_url(args.storage)}")
    study = run_study(config, storage_url=args.storage, progress=not args.no_progress)
    print(f"worker done: {sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == 'COMPLETE')} "
          "trials of the study are complete")
    return 0


def _confirm_front(config, study, args: argparse.Namespace) -> None:
    """At the end of optimize/grid: re-time the front side by side, unless --no-remeasure."""
    from dlas_dse.remeasure import remeasure

    if not args.no_remeasure and "latency_ms" in config.objectives:
        remeasure(config, study, REMEASURE_ROUNDS, progress=not args.no_progress)


def _remeasure(args: argparse.Namespace) -> int:
    from dlas_dse.config import load_study
    from dlas_dse.remeasure import describe, remeasure
    from dlas_dse.study.opening import load_stored_study

    config = load_study(args.study)
    if "latency_ms" not in config.objectives:
        print(f"error: study {config.name!r} does not measure latency_ms: nothing to re-measure", file=sys.stderr)
        return 2
    study = load_stored_study(args.study, args.storage)
    records = remeasure(config, study, args.rounds, everything=args.all, progress=not args.no_progress)
    print(describe(records, study, list(config.objectives)) or "no complete trial to re-measure")
    return 0
