"""Global unstructured magnitude pruning: the zeroed weights stay in a dense model unless layer 4
stores them sparse (``algorithm.format: sparse``)."""

from __future__ import annotations

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPRESSIONS, Param
from dlas_dse.stack.compression.base import FINE_TUNING, FineTune, fine_tuning_images
from dlas_dse.stack.datasets import Dataset

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
prune = lazy_import("torch.nn.utils.prune")


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
    "weight_pruning", **FINE_TUNING, traits={"zeroed_weights": "sparsity", "training_images": fine_tuning_images},
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
