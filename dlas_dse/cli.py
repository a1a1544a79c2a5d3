"""Command-line interface: ``python -m dlas_dse <command>`` (or ``dlas-dse <command>``)."""

from __future__ import annotations

import argparse
import os
import sys

from dlas_dse.board import commands as board_commands
from dlas_dse.samplers import SAMPLERS
from dlas_dse.surrogate import commands as surrogate_commands

DATA_DIR_VARIABLE = "DLAS_DATA_DIR"
REMEASURE_ROUNDS = 10

EXAMPLES = """\
examples:
  python -m dlas_dse list                              studies and search spaces
  python -m dlas_dse optimize --study quickstart       run (or resume) a study
  python -m dlas_dse optimize --study quickstart --n-trials 20 --sampler tpe
  python -m dlas_dse show --study quickstart           trials and the Pareto front
  python -m dlas_dse remeasure --study quickstart      re-time the front side by side (confirmed latencies)
  python -m dlas_dse report --study quickstart         CSV/Parquet, Pareto plots, importances, observations
  python -m dlas_dse dashboard --study quickstart      the Optuna dashboard in your browser
  python -m dlas_dse surrogate train --study dlas-paper-mini     an XGBoost latency model of the trials
  python -m dlas_dse surrogate predict --study dlas-paper-mini --grid   predicted latency of every point
  python -m dlas_dse devices                           the hardware catalogue: reachable now? peak?
  python -m dlas_dse cache verify                      check every cached artifact against its digests
  python -m dlas_dse grid --study dlas-paper --dry-run the paper's ~1,000-point grid, planned
  python -m dlas_dse grid --study dlas-paper-mini      the same grid on digits, run here
  python -m dlas_dse worker --study dlas-paper-mini --storage postgresql://user@dbhost/dlas
                                                       one of many workers sharing a grid
  python -m dlas_dse optimize --study edge-arm --hardware host-cpu   an edge study, run on this machine
  python -m dlas_dse board run -- python -m dlas_dse optimize --study edge-arm
                                                       the edge study on an emulated AArch64 board (QEMU)

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


def _study_arguments(command: argparse.ArgumentParser) -> None:
    """``--study`` and ``--storage``, for the commands that read a stored study."""
    command.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    command.add_argument("--storage", help="SQLAlchemy URL (default: the study's)")


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
    optimize.add_argument("--sampler", choices=SAMPLERS.names(),
                          help="override the study's sampler (surrogate: XGBoost-assisted, see `surrogate --help`)")
    optimize.add_argument("--timeout", type=_positive(float), metavar="SECONDS", help="stop starting new trials after this long")
    optimize.add_argument("--data-dir", help=f"folder holding cifar-10-batches-py/ and imagenet/val/ "
                          f"(default: ${DATA_DIR_VARIABLE} or ./data)")
    optimize.add_argument("--weights", help="checkpoint to use instead of training: sets model.weights "
                          "({architecture} and {dataset} are replaced; 'torchvision' = pretrained)")
    optimize.add_argument("--hardware", metavar="DEVICE", help="run the space on this device instead of the one it "
                          "names (a name from `python -m dlas_dse devices`, e.g. host-cpu)")
    optimize.add_argument("--no-progress", action="store_true", help="no progress bar (one line per trial only)")
    optimize.add_argument("--no-remeasure", action="store_true",
                          help="do not re-time the Pareto front when the study finishes (see `remeasure`)")

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
    grid.add_argument("--data-dir", help=f"folder holding the datasets (default: ${DATA_DIR_VARIABLE} or ./data)")
    grid.add_argument("--no-progress", action="store_true", help="no progress bar (one line per trial only)")
    grid.add_argument("--no-remeasure", action="store_true",
                          help="do not re-time the Pareto front when the study finishes (see `remeasure`)")

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
    worker.add_argument("--data-dir", help=f"folder holding the datasets (default: ${DATA_DIR_VARIABLE} or ./data)")
    worker.add_argument("--no-progress", action="store_true", help="no progress bar (one line per trial only)")

    remeasure = commands.add_parser(
        "remeasure", help="re-time the Pareto front (or every trial) side by side: confirmed latencies",
        description="Time the trials on the study's Pareto front, and every trial within 5% of it, again in "
                    "alternating rounds in one process (each round one interference-checked window per trial), "
                    "and store each one's confirmed latency (median of the rounds) with a 95% bootstrap interval. "
                    "show, report and the observations use confirmed figures where present. Resumable (rounds are "
                    "stored as they finish) and idempotent: a confirmed trial is not timed again. optimize and grid "
                    "run it on the front when they finish (--no-remeasure skips that).")
    _study_arguments(remeasure)
    scope = remeasure.add_mutually_exclusive_group()
    scope.add_argument("--front", action="store_true", help="the front and trials within 5%% of it (default)")
    scope.add_argument("--all", action="store_true", help="every complete trial")
    remeasure.add_argument("--rounds", type=_positive(int), default=REMEASURE_ROUNDS,
                           help=f"rounds per trial (default: {REMEASURE_ROUNDS})")
    remeasure.add_argument("--no-progress", action="store_true", help="no progress bar")

    show = commands.add_parser("show", help="print a study's trials and Pareto front")
    _study_arguments(show)

    report = commands.add_parser(
        "report", help="write a study's tables, Pareto plots, parameter importances and observations",
        description="Write to results/<study>/ (or --out): trials.csv and trials.parquet (every layer parameter, "
                    "objectives, stage times, reuse flags, provenance), pareto.csv, accuracy-vs-latency and "
                    "latency-vs-size plots per platform (PNG and interactive HTML), fANOVA parameter importance "
                    "per objective (importance.csv/.png) and observations.md: the DLAS paper's cross-stack "
                    "findings recomputed from the study, each with its numbers and a verdict.")
    _study_arguments(report)
    report.add_argument("--out", help="folder to write to (default: results/<study>/)")

    dashboard = commands.add_parser(
        "dashboard", help="serve the Optuna dashboard on a study's storage and print its URL",
        description="Start optuna-dashboard on the study's storage (every study in it is browsable) and print "
                    "the URL of this study's page. It listens on 127.0.0.1 only unless --host says otherwise; "
                    "from another machine, tunnel with `ssh -L PORT:127.0.0.1:PORT host`. Ctrl-C stops it.")
    _study_arguments(dashboard)
    dashboard.add_argument("--port", type=_positive(int), default=8080, help="TCP port (default: 8080)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default: 127.0.0.1; 0.0.0.0 exposes it to the network)")

    surrogate_commands.add_parser(commands)
    board_commands.add_parser(commands)

    commands.add_parser("list", help="list the available studies and search spaces")

    devices = commands.add_parser(
        "devices", help="list the hardware catalogue, which devices are reachable now, and their peaks",
        description="The devices of search_spaces/hardware.yaml: kind, target, whether each can be used now "
                    "(local checks; for RPC boards the tracker's queue under the device's key), and the "
                    "measured float32 peak where known.")
    devices.add_argument("--measure-peak", action="store_true",
                         help="measure the local CPU's peak now (float32 GEMM, a few seconds) if not cached")
    cache = commands.add_parser(
        "cache", help="check the artifact cache: `cache verify [--repair]`",
        description="Every cache entry (checkpoint, compressed model, compiled library, cached value, tuning "
                    "database) records the size and sha256 of its files when written. Trials check them before "
                    "use and rebuild a corrupt entry by themselves; `cache verify` checks the whole cache now.")
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="check every entry; exit code 1 if one is corrupt (unless --repair)",
        description="Check every entry of the artifact cache, tuning databases included, against the digests "
                    "recorded when it was written, and print each corrupt one with the reason. Exit code 1 if "
                    "any is corrupt. --repair moves them to <cache>/.corrupt/<stage>-<key>-<time>/ (with "
                    "reason.txt) instead, and the next trial that needs one rebuilds it. Safe while studies run: "
                    "each entry is checked under its lock.")
    verify.add_argument("--repair", action="store_true", help="move corrupt entries aside (exit code 0)")
    verify.add_argument("--cache", metavar="DIR", help="the cache folder (default: $DLAS_CACHE_DIR or results/cache)")
    return parser


def _optimize(args: argparse.Namespace) -> int:
    from dlas_dse.config import check_grid, load_study
    from dlas_dse.analysis.report import describe_study
    from dlas_dse.study.storage import mask_url
    from dlas_dse.study.loop import run_study

    config = load_study(args.study, {"hardware.device": args.hardware} if args.hardware else None)
    if args.sampler == "grid":
        check_grid(config.space, "command line", "--sampler grid")
    if args.weights:
        config.space = config.space.with_fixed("model.weights", args.weights)
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
    config = load_study(args.study, overrides)
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


def _show(args: argparse.Namespace) -> int:
    from dlas_dse.analysis.report import describe_study
    from dlas_dse.study.opening import load_stored_study

    study = load_stored_study(args.study, args.storage)
    print(describe_study(study))
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlas_dse.files import project_root
    from dlas_dse.analysis.report_writer import write_report
    from dlas_dse.study.opening import load_stored_study

    study = load_stored_study(args.study, args.storage)
    directory = Path(args.out) if args.out else project_root() / "results" / study.study_name
    report = write_report(study, directory)
    print(f"report of study {study.study_name} in {directory}:")
    for path in report.written:
        print(f"  {path.name}")
    for reason in report.skipped:
        print(f"  not written: {reason}", file=sys.stderr)
    return 0 if any(path.suffix == ".png" for path in report.written) else 1


def _dashboard(args: argparse.Namespace) -> int:
    from dlas_dse.analysis.dashboard import DashboardError, serve
    from dlas_dse.study.opening import find_stored_study

    storage, name = find_stored_study(args.study, args.storage)

    def announce(url: str) -> None:
        print(f"dashboard of study {name}: {url}  (Ctrl-C to stop)", flush=True)

    try:
        serve(storage, name, args.host, args.port, announce)
    except DashboardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndashboard stopped")
    return 0


def _list(args: argparse.Namespace) -> int:
    from dlas_dse.config import available

    for folder, title in (("studies", "studies (python -m dlas_dse optimize --study NAME)"),
                          ("search_spaces", "search spaces")):
        print(f"{title}:")
        for name, description in available(folder):
            print(f"  {name:<20} {description}")
    return 0


def _devices(args: argparse.Namespace) -> int:
    from dlas_dse.cache import ArtifactCache
    from dlas_dse.config import default_cache_dir
    from dlas_dse.registry import DEVICES
    from dlas_dse.stack.devices import catalogue_path, create_device

    cache = ArtifactCache(default_cache_dir())
    print(f"hardware catalogue {catalogue_path()}")
    width = max(12, *(len(name) for name in DEVICES.names()))
    for name in DEVICES.names():
        device = create_device({"device": name, "threads": 0})
        usable, why = device.status()
        peak = device.peak(cache, measure=args.measure_peak)
        print(f"  {name:<{width}} {device.kind:<13} {'ready' if usable else 'NOT REACHABLE':<13} {why}")
        print(f"  {'':<{width}} target {device.target}")
        print(f"  {'':<{width}} peak " + (f"{peak['gflops']:.1f} GFLOP/s at {device.threads} threads ({peak['method']})"
                                     if peak else "unknown" + (" (measure: --measure-peak)"
                                                               if device.details["kind"] == "local-cpu" else "")))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlas_dse.cache_verify import describe, verify_cache
    from dlas_dse.config import default_cache_dir

    root = Path(args.cache or default_cache_dir())
    if not root.is_dir():
        print(f"error: no artifact cache at {root}; give its folder with --cache DIR (or set DLAS_CACHE_DIR)",
              file=sys.stderr)
        return 2
    checked, findings = verify_cache(root, repair=args.repair)
    print(describe(root, checked, findings, args.repair))
    return 1 if findings and not args.repair else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for configuration errors)."""
    args = _parser().parse_args(argv)
    from dlas_dse.config import ConfigError
    from dlas_dse.registry import PreflightError
    from dlas_dse.study.opening import StudyNotFound

    if getattr(args, "data_dir", None):
        os.environ[DATA_DIR_VARIABLE] = str(args.data_dir)
    try:
        commands = {"optimize": _optimize, "grid": _grid, "worker": _worker, "remeasure": _remeasure, "show": _show, "report": _report,
                    "dashboard": _dashboard, "surrogate": surrogate_commands.run, "list": _list, "devices": _devices,
                    "cache": _cache, "board": board_commands.run}
        return commands[args.command](args)
    except (ConfigError, PreflightError, StudyNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
        return 130
