"""Argument helpers shared by the commands."""

from __future__ import annotations

import argparse

DATA_DIR_VARIABLE = "DLAS_DATA_DIR"


def positive(kind: type):
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


def study_arguments(command: argparse.ArgumentParser) -> None:
    """``--study`` and ``--storage``, for the commands that read a stored study."""
    command.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    command.add_argument("--storage", help="SQLAlchemy URL (default: the study's)")


def trial_arguments(command: argparse.ArgumentParser, remeasure: bool = True) -> None:
    """``--data-dir`` and ``--no-progress`` for the commands that run trials, and ``--no-remeasure``
    for those that re-time the Pareto front when they finish."""
    command.add_argument("--data-dir", help=f"folder holding cifar-10-batches-py/ and imagenet/val/ "
                         f"(default: ${DATA_DIR_VARIABLE} or ./data)")
    command.add_argument("--no-progress", action="store_true", help="no progress bar (one line per trial only)")
    if remeasure:
        command.add_argument("--no-remeasure", action="store_true",
                             help="do not re-time the Pareto front when the study finishes (see `remeasure`)")
