"""The commands that read a stored study: ``show``, ``report`` and ``dashboard``."""

from __future__ import annotations

import argparse
import sys

from dlas_dse.cli.arguments import positive, study_arguments


def add_parsers(commands) -> None:
    """Add the commands that read a stored study to the CLI's sub-commands."""
    show = commands.add_parser("show", help="print a study's trials and Pareto front")
    study_arguments(show)
    show.set_defaults(run=_show)

    report = commands.add_parser(
        "report", help="write a study's tables, Pareto plots, parameter importances and observations",
        description="Write to results/<study>/ (or --out): trials.csv and trials.parquet (every layer parameter, "
                    "objectives, stage times, reuse flags, provenance), pareto.csv, accuracy-vs-latency and "
                    "latency-vs-size plots per platform (PNG and interactive HTML), fANOVA parameter importance "
                    "per objective (importance.csv/.png) and observations.md: the DLAS paper's cross-stack "
                    "findings recomputed from the study, each with its numbers and a verdict.")
    study_arguments(report)
    report.add_argument("--out", help="folder to write to (default: results/<study>/)")
    report.set_defaults(run=_report)

    dashboard = commands.add_parser(
        "dashboard", help="serve the Optuna dashboard on a study's storage and print its URL",
        description="Start optuna-dashboard on the study's storage (every study in it is browsable) and print "
                    "the URL of this study's page. It listens on 127.0.0.1 only unless --host says otherwise; "
                    "from another machine, tunnel with `ssh -L PORT:127.0.0.1:PORT host`. Ctrl-C stops it.")
    study_arguments(dashboard)
    dashboard.add_argument("--port", type=positive(int), default=8080, help="TCP port (default: 8080)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default: 127.0.0.1; 0.0.0.0 exposes it to the network)")
    dashboard.set_defaults(run=_dashboard)


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
