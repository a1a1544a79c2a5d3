"""Command-line interface: ``python -m dlas_dse <command>`` (or ``dlas-dse <command>``).

Each command's module adds its sub-command and sets its ``run`` function (``set_defaults``):
``running`` (optimize, grid, worker, remeasure), ``results`` (show, report, dashboard),
``machine`` (list, devices, cache), and the ``surrogate`` and ``board`` packages' own commands.
"""

from __future__ import annotations

import argparse
import os
import sys

from dlas_dse.board import commands as board_commands
from dlas_dse.cli import machine, results, running
from dlas_dse.cli.arguments import DATA_DIR_VARIABLE
from dlas_dse.surrogate import commands as surrogate_commands

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dlas_dse", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Design-space exploration across the Deep Learning Acceleration Stack.",
        epilog=EXAMPLES)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    running.add_parsers(commands)
    results.add_parsers(commands)
    surrogate_commands.add_parser(commands)
    board_commands.add_parser(commands)
    machine.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for configuration errors)."""
    args = _parser().parse_args(argv)
    from dlas_dse.config import ConfigError
    from dlas_dse.registry import PreflightError
    from dlas_dse.study.opening import StudyNotFound

    if getattr(args, "data_dir", None):
        os.environ[DATA_DIR_VARIABLE] = str(args.data_dir)
    try:
        return args.run(args)
    except (ConfigError, PreflightError, StudyNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
        return 130
