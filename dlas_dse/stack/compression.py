"""Layer 3, model optimisations: each technique turns a trained model into a deployable one.

A technique is ``function(model, dataset, params, fine_tune) -> (model, record)``. It must be
deterministic in the structure it produces, so that a cached result is rebuilt by running the
technique again without fine-tuning (``fine_tune=None``) and loading the cached state dict. A
technique that changes the arithmetic names it in its record (``precision``, ``tolerance``, and for
int8 ``calibration`` with the ``calibration_split`` and ``calibration_samples`` that set it);
:func:`compress` hands them on as the fields of :class:`Compressed`.
"""

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
from dlas_dse.stack.models import count_parameters, train

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
prune = lazy_import("torch.nn.utils.prune")

FineTune = Callable[["nn.Module"], dict] | None

FINE_TUNING = {
    "finetune_epochs": Param(int, default=1, low=0, high=100, help="fine-tuning epochs after compressing"),
    "finetune_learning_rate": Param(float, default=0.01, low=1e-6, high=10.0, help="fine-tuning learning rate"),
}
"""Parameters of the techniques that fine-tune."""


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs of every convolution and linear layer."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def sparsity(model: nn.Module) -> dict:
    """Zeros among the conv and linear weights: global share and count, and per-layer extremes."""
    per_layer = [(int((m.weight == 0).sum()), m.weight.numel()) for m, _ in prunable_weights(model)]
    zeros, total = sum(z for z, _ in per_layer), sum(n for _, n in per_layer)
    shares = [z / n for z, n in per_layer]
    return {"sparsity": zeros / total, "zero_weights": zeros, "prunable_weights": total,
            "layers": len(per_layer), "layer_sparsity_min": min(shares), "layer_sparsity_max": max(shares)}


def channels(model: nn.Module) -> int:
    """Output channels summed over the convolutions."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


@COMPRESSIONS.register("none")
def none(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """No compression: the trained fp32 model as it is."""
    return model, {}


def global_magnitude_masks(weights: list[torch.Tensor], target: float, layer_cap: float) -> list[torch.Tensor]:
    """Masks that zero the ``round(target * total)`` smallest-magnitude weights over all layers,
    taking at most ``layer_cap`` of any one layer (so that no layer is removed entirely)."""
    total = sum(w.numel() for w in weights)
    wanted = round(target * total)
    orders = [w.detach().abs().flatten().argsort() for w in weights]
    caps = [int(layer_cap * w.numel()) for w in weights]
    candidates = torch.cat([w.detach().abs().flatten()[order[:cap]] for w, order, cap in zip(weights, orders, caps)])
    owners = torch.cat([torch.full((cap,), i) for i, cap in enumerate(caps)])
    chosen = owners[candidates.argsort()[:wanted]]
    counts = torch.bincount(chosen, minlength=len(weights))
    masks = []
    for weight, order, count in zip(weights, orders, counts.tolist()):
        mask = torch.ones(weight.numel())
        mask[order[:count]] = 0
        masks.append(mask.reshape(weight.shape))
    return masks


@COMPRESSIONS.register(
    "weight_pruning", **FINE_TUNING, traits={"zeroed_weights": "sparsity"},
    sparsity=Param(float, default=0.5, low=0.01, high=0.99, help="share of conv/linear weights set to zero"),
    max_layer_sparsity=Param(float, default=0.95, low=0.01, high=0.999,
                             help="no layer loses more than this share (raised to sparsity if below it)"))
def weight_pruning(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """Global unstructured L1-magnitude pruning of conv and linear weights; masks kept while fine-tuning."""
    targets = prunable_weights(model)
    cap = max(params["max_layer_sparsity"], params["sparsity"])
    masks = global_magnitude_masks([m.weight for m, _ in targets], params["sparsity"], cap)
    for (module, name), mask in zip(targets, masks):
        prune.custom_from_mask(module, name, mask)
    record = fine_tune(model) if fine_tune else {}
    for module, name in targets:
        prune.remove(module, name)
    return model, {**record, **sparsity(model), "target_sparsity": params["sparsity"]}


def _classifiers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


@COMPRESSIONS.register(
    "channel_pruning", **FINE_TUNING, traits={"removed_channels": "ratio"},
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


@COMPRESSIONS.register("fp16", traits={"weight_bits": 16})
def fp16(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """Weights and activations in float16: the compiler lowers the deployed module to half precision;
    it is checked against the fp32 PyTorch model within 5% of the largest logit."""
    return model, {"precision": "float16", "tolerance": 5e-2}


def calibrate_input_scales(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Per-tensor symmetric int8 scale (max |input| / 127) of every conv and linear layer's input."""
    peaks: dict[str, float] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def record(_module, inputs, _output, name=name):
                peaks[name] = max(peaks.get(name, 0.0), float(inputs[0].detach().abs().max()))
            hooks.append(module.register_forward_hook(record))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    for hook in hooks:
        hook.remove()
    return {name: max(peak, 1e-8) / 127 for name, peak in peaks.items()}


@COMPRESSIONS.register(
    "int8", traits={"weight_bits": 8}, calibration_images=Param(int, default=512, low=1, high=100000,
                                     help="training images whose activation ranges set the input scales"))
def int8(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """Post-training int8 quantisation: per-channel symmetric weights, per-tensor activations
    calibrated on training images; the deployed module computes int8 x int8 with int32 accumulation."""
    split = "train" if len(dataset.train_y) else "validation"
    images = dataset.images(split)[:params["calibration_images"]]
    # The compiled module is checked against an int8 PyTorch reference of the same arithmetic, which
    # it matches bit for bit on host-cpu. Where float rounding differs (a schedule that does not
    # contract rescale and bias into one multiply-add, the summation order of a pooling), an input
    # lands on the other side of a rounding boundary and the flip propagates through later layers:
    # hence 5% of the largest logit. A wrong kernel is off by ~100%.
    return model, {"precision": "int8", "calibration": calibrate_input_scales(model, torch.from_numpy(images)),
                   "calibration_split": split, "calibration_samples": len(images), "tolerance": 5e-2}


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
              "code": code_fingerprint(sys.modules[__name__], sys.modules[train.__module__])}
    directory, hit = cache.get_or_create("compress", inputs, create)
    compressed, _ = technique(copy.deepcopy(model), dataset, params, None)
    compressed.load_state_dict(torch.load(directory / "compressed.pt", weights_only=True, map_location="cpu"))
    record = cache.metadata(directory)["record"]
    calibration_images = (dataset.images(record["calibration_split"])[:record["calibration_samples"]]
                          if "calibration_split" in record else None)
    return Compressed(compressed.eval(), {**record, "hit": hit, "compressed": directory.name}, calibration_images)
