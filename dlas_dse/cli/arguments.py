"""Argument helpers shared by the commands."""

from __future__ import annotations

import argparse

from dlas_dse.files import ConfigError

DATA_DIR_VARIABLE = "DLAS_DATA_DIR"


def positive(kind: type):
    """An argparse type accepting numbers above zero."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def study_arguments(command: argparse.ArgumentParser) -> None:
    """``--study`` and ``--storage``, for the commands that read a stored study."""
    command.add_argument("--study", required=True, help="a name in studies/ or a path to a study YAML")
    command.add_argument("--storage", help="SQLAlchemy URL (default: the study's)")


def trial_arguments(command: argparse.ArgumentParser, remeasure: bool = True) -> None:
    """``--data-dir`` and ``--no-progress`` for the commands that run trials, and ``--no-remeasure``
    for those that re-time the Pareto front when they finish."""
    command.add_argument("--data-dir", help=f"folder holding cifar-10-batches-py/ and imagenet/val/ (and train/) "
                         f"(default: ${DATA_DIR_VARIABLE} or ./data)")
    command.add_argument("--no-progress", action="store_true", help="no progress bar (one line per trial only)")
    if remeasure:
        command.add_argument("--no-remeasure", action="store_true",
                             help="do not re-time the Pareto front when the study finishes (see `remeasure`)")


def weights_argument(command: argparse.ArgumentParser) -> None:
    """``--weights``: the checkpoints models start from, for all datasets or per dataset."""
    command.add_argument(
        "--weights", nargs="+", metavar="[DATASET=]SOURCE", type=_weights_item,
        help="checkpoint the models start from instead of random weights, for every dataset (SOURCE) or per "
             "dataset (imagenet=torchvision cifar10=ckpt/{architecture}.pt); {architecture} and {dataset} are "
             "replaced, 'torchvision' = torchvision's pretrained ImageNet weights from the torch hub cache. "
             "With model.epochs 0 they are used as they are; otherwise they are fine-tuned for the epochs")


def _weights_item(text: str) -> tuple[str | None, str]:
    dataset, separator, source = text.partition("=")
    if not separator:
        return None, text
    if not dataset or not source:
        raise argparse.ArgumentTypeError(f"expected SOURCE or DATASET=SOURCE, got {text!r}")
    return dataset, source


def weights_override(items: list[tuple[str | None, str]] | None) -> dict:
    """The space override ``--weights`` makes: model.weights fixed, or given per dataset."""
    if not items:
        return {}
    per_dataset = {dataset: source for dataset, source in items if dataset}
    if len(per_dataset) != len(items):
        if len(items) > 1:
            raise ConfigError("command line", "--weights", "give one SOURCE for every dataset, or DATASET=SOURCE "
                              f"for each (got {' '.join(d + '=' + s if d else s for d, s in items)})")
        return {"model.weights": items[0][1]}
    return {"model.weights": {"per": "dataset.name", "values": per_dataset}}
