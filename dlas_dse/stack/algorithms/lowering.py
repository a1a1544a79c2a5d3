"""The contract between the Relax rewrite and the algorithms: a :class:`Lowering` computes one
convolution as a TE function of its input and constants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dlas_dse.lazy import lazy_import

te = lazy_import("tvm.te")


@dataclass
class Lowering:
    """One convolution as TE: ``compute(data, *constants)`` returns the output in the spec's
    layout; ``constants`` are the (pre-transformed) weights it needs; ``algorithm`` is the name
    recorded for the trial (``direct``, ``sparse_gemm``, ...); ``why`` says why it was chosen,
    where something chose it (``auto``)."""

    algorithm: str
    compute: Callable[..., te.Tensor]
    constants: list[np.ndarray] = field(default_factory=list)
    why: str | None = None


class NotApplicable(Exception):
    """The requested algorithm cannot compute this convolution (the message says why); the
    rewrite falls back to ``direct`` and records the reason."""
