"""No compression: the trained fp32 model as it is."""

from __future__ import annotations

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPRESSIONS
from dlas_dse.stack.compression.base import FineTune
from dlas_dse.stack.datasets import Dataset

nn = lazy_import("torch.nn")


@COMPRESSIONS.register("none")
def none(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """No compression: the trained fp32 model as it is."""
    return model, {}
