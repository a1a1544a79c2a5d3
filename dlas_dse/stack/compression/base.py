"""What every compression technique shares: the fine-tuning parameters, the :class:`Compressed`
contract handed to layers 4 and 5, and :func:`compress`, which caches a technique's result."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dlas_dse.cache import ArtifactCache, code_fingerprint
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPRESSIONS, Param
from dlas_dse.stack.datasets import Dataset
from dlas_dse.stack.models import train

torch = lazy_import("torch")
nn = lazy_import("torch.nn")

FineTune = Callable[["nn.Module"], dict] | None

FINE_TUNING = {
    "finetune_epochs": Param(int, default=1, low=0, high=100, help="fine-tuning epochs after compressing"),
    "finetune_learning_rate": Param(float, default=0.01, low=1e-6, high=10.0, help="fine-tuning learning rate"),
}
"""Parameters of the techniques that fine-tune."""


def fine_tuning_images(params: dict) -> str | None:
    """The ``training_images`` trait of the techniques that fine-tune: why they use training images."""
    return f"fine-tunes for {params['finetune_epochs']} epochs on them" if params.get("finetune_epochs") else None


@dataclass(frozen=True)
class Compressed:
    """What layer 3 hands to layers 4 and 5: the deployable model and what its compilation and its
    check against PyTorch must honour."""

    model: nn.Module
    """The compressed model, in eval mode."""
    record: dict
    """What the trial stores: what the technique achieved (with ``precision``, ``calibration`` and
    ``tolerance`` where it changes the arithmetic), its cache entry (``compressed``) and ``hit``."""
    calibration_images: np.ndarray | None = None
    """int8: the images that set ``calibration`` (a compiler that calibrates itself uses the same)."""

    @property
    def key(self) -> str:
        """The cache entry of the compressed model (what a build of it is keyed by)."""
        return self.record["compressed"]

    @property
    def precision(self) -> str:
        """The number format the model deploys in."""
        return self.record.get("precision", "float32")

    @property
    def calibration(self) -> dict | None:
        """int8: the input scale of every conv and linear layer (by name in the BatchNorm-folded model)."""
        return self.record.get("calibration")

    @property
    def tolerance(self) -> float:
        """How far the compiled output may differ from the precision's reference (share of the largest logit)."""
        return self.record.get("tolerance", 0.0)


def compress(model: nn.Module, dataset: Dataset, params: dict, model_params: dict, checkpoint: str,
             cache: ArtifactCache) -> Compressed:
    """Apply ``params["technique"]`` to a copy of ``model`` (cached by checkpoint and parameters)."""
    technique = COMPRESSIONS.get(params["technique"]).function
    recipe = {**model_params, "epochs": params.get("finetune_epochs", 0),
              "learning_rate": params.get("finetune_learning_rate", 0.0)}

    def fine_tune(target: nn.Module) -> dict:
        return {f"finetune_{k}": v for k, v in train(target, dataset, recipe).items()}

    def create(directory: Path) -> dict:
        compressed, record = technique(copy.deepcopy(model), dataset, params, fine_tune)
        torch.save(compressed.state_dict(), directory / "compressed.pt")
        return {"record": record}

    inputs = {"checkpoint": checkpoint, "compression": params,
              "code": code_fingerprint(sys.modules[__name__], sys.modules[technique.__module__],
                                       sys.modules[train.__module__])}
    directory, hit = cache.get_or_create("compress", inputs, create)
    compressed, _ = technique(copy.deepcopy(model), dataset, params, None)
    compressed.load_state_dict(torch.load(directory / "compressed.pt", weights_only=True, map_location="cpu"))
    record = cache.metadata(directory)["record"]
    calibration_images = (dataset.calibration_images(record["calibration_samples"])
                          if "calibration_samples" in record else None)
    return Compressed(compressed.eval(), {**record, "hit": hit, "compressed": directory.name}, calibration_images)
