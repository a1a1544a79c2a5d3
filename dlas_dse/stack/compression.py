"""Layer 3, model optimisations: each technique turns a trained model into a deployable one."""

from __future__ import annotations

import torch.nn as nn

from dlas_dse.registry import COMPRESSIONS
from dlas_dse.stack.datasets import Dataset


@COMPRESSIONS.register("none")
def none(model: nn.Module, dataset: Dataset, params: dict) -> tuple[nn.Module, dict]:
    """No compression: the trained fp32 model as it is."""
    return model, {}


def compress(model: nn.Module, dataset: Dataset, params: dict) -> tuple[nn.Module, dict]:
    """Apply ``params["technique"]``; returns the model and what the technique achieved."""
    return COMPRESSIONS.get(params["technique"]).function(model, dataset, params)
