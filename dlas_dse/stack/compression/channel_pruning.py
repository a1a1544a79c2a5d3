"""Structured channel pruning: the model becomes physically smaller."""

from __future__ import annotations

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPRESSIONS, Param
from dlas_dse.stack.compression.base import FINE_TUNING, FineTune, fine_tuning_images
from dlas_dse.stack.datasets import Dataset
from dlas_dse.stack.models import count_parameters

torch = lazy_import("torch")
nn = lazy_import("torch.nn")


def channels(model: nn.Module) -> int:
    """Output channels summed over the convolutions."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def _classifiers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


@COMPRESSIONS.register(
    "channel_pruning", **FINE_TUNING, traits={"removed_channels": "ratio", "training_images": fine_tuning_images},
    ratio=Param(float, default=0.25, low=0.01, high=0.9, help="share of channels removed from each layer"))
def channel_pruning(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """Structured L1-norm channel pruning with torch-pruning's dependency graph (residual and
    depthwise layers stay consistent); the model becomes physically smaller."""
    import torch_pruning as tp

    before = {"channels_before": channels(model), "parameters_before": count_parameters(model)}
    example = torch.zeros(1, *dataset.image_shape)
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=params["ratio"],
                                  ignored_layers=_classifiers(model, dataset.num_classes))
    pruner.step()
    record = fine_tune(model) if fine_tune else {}
    return model, {**record, **before, "channels_after": channels(model),
                   "parameters_after": count_parameters(model)}
