"""Deployed number formats: how the compiler lowers a float32 Relax module to the format a
compression asks for, and the PyTorch model the compiled module must then match.

A format is an entry of :data:`PRECISIONS`, registered beside the technique that deploys in it
(``fp16.py``, ``int8.py``); its function returns the :class:`Precision`. float32 is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dlas_dse.registry import Registry

PRECISIONS = Registry("precision", "name")
"""Every deployed number format by name; an entry's function returns its :class:`Precision`."""


@dataclass(frozen=True)
class Precision:
    """A deployed number format: how to lower a Relax module to it, and the PyTorch model
    (given the BatchNorm-folded model and the calibration) the compiled module must match."""

    lower: Callable
    """``lower(mod, folded_model, calibration) -> (mod, record)``."""
    reference: Callable = lambda model, calibration: model
    """``reference(folded_model, calibration) -> model``."""


def precision(name: str) -> Precision:
    """The number format ``name`` (raises, listing the known ones, for another name)."""
    return PRECISIONS.get(name).function()


@PRECISIONS.register("float32")
def float32() -> Precision:
    """The trained model's own format: nothing to lower."""
    return Precision(lambda mod, model, calibration: (mod, {}))
