"""Static descriptors of a configuration, computed without training, building or measuring: the
architecture's MACs, parameters and convolutions at the dataset's input size, what compression
does to them, and the device's threads and measured peak."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from dlas_dse.cache import ArtifactCache
from dlas_dse.registry import COMPRESSIONS, MODELS
from dlas_dse.space import Config, nest
from dlas_dse.stack.datasets import input_geometry



@functools.lru_cache(maxsize=None)
def architecture_profile(architecture: str, side: int, classes: int) -> dict:
    """MACs per image (all, and those of depthwise and of 1x1 convolutions), parameters,
    convolutions, depthwise convolutions and the elements the convolutions and linear layers write,
    of the untrained architecture at ``side`` x ``side`` inputs (one forward pass of zeros, counted
    with hooks)."""
    model = MODELS.get(architecture).function(classes, side).eval()
    counts = {"macs": 0, "depthwise_macs": 0, "pointwise_macs": 0, "convs": 0, "depthwise_convs": 0, "outputs": 0}

    def count(module: nn.Module, inputs, output) -> None:
        counts["outputs"] += output.numel()
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            macs = output.numel() * kernel * module.in_channels // module.groups
            depthwise = module.groups > 1 and module.groups == module.in_channels
            counts["macs"] += macs
            counts["depthwise_macs"] += macs if depthwise else 0
            counts["pointwise_macs"] += macs if kernel == 1 and module.groups == 1 else 0
            counts["convs"] += 1
            counts["depthwise_convs"] += depthwise
        elif isinstance(module, nn.Linear):
            counts["macs"] += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, 3, side, side))
    for hook in hooks:
        hook.remove()
    return {**counts, "parameters": sum(p.numel() for p in model.parameters())}


def _share(compression: dict, trait: str) -> float:
    """The value of the parameter that the chosen technique declares as its ``trait`` (its default
    where the configuration leaves it out); 0 when the technique declares no such trait."""
    entry = COMPRESSIONS.get(compression.get("technique", "none"))
    name = entry.traits.get(trait)
    return 0.0 if name is None else compression.get(name, entry.params[name].default)


def model_descriptors(config: Config) -> dict:
    """Descriptors of the deployed model: input size, MACs and parameters before and after
    compression (with the shares of depthwise and 1x1 convolutions, and per convolution), the
    elements its layers write, convolution counts, weight bits and sparsity."""
    layers = nest(config)
    side, classes = input_geometry(layers["dataset"])
    profile = architecture_profile(layers["model"]["architecture"], side, classes)
    compression = layers.get("compression", {})
    sparsity = _share(compression, "zeroed_weights")
    removed = _share(compression, "removed_channels")
    kept = (1.0 - removed) ** 2  # channels leave both the inputs and the outputs of each layer
    sparse = layers.get("algorithm", {}).get("format") == "sparse"
    bits = COMPRESSIONS.trait(compression.get("technique", "none"), "weight_bits", 32)
    depthwise_macs = profile["depthwise_macs"] * (1.0 - removed)  # one input channel per output channel
    macs = (profile["macs"] - profile["depthwise_macs"]) * kept + depthwise_macs
    parameters = profile["parameters"] * kept
    return {"input_side": side, "classes": classes, "convs": profile["convs"],
            "depthwise_convs": profile["depthwise_convs"], "weight_bits": bits, "weight_sparsity": sparsity,
            "channels_kept": 1.0 - removed, "log_macs": math.log(macs), "log_parameters": math.log(parameters),
            "depthwise_mac_share": depthwise_macs / macs, "pointwise_mac_share": profile["pointwise_macs"] * kept / macs,
            "log_macs_per_conv": math.log(macs / profile["convs"]),
            "log_outputs": math.log(profile["outputs"] * (1.0 - removed)),
            "log_executed_macs": math.log(macs * (1.0 - sparsity if sparse else 1.0)),
            "log_deployed_bytes": math.log(parameters * bits / 8 * (1.0 - sparsity if sparse else 1.0))}


@functools.lru_cache(maxsize=None)
def _device_descriptors(device: str, threads: int, cache_dir: str) -> dict:
    from dlas_dse.stack.algorithms.schedule import vector_bits
    from dlas_dse.stack.devices import create_device

    target = create_device({"device": device, "threads": threads})
    peak = target.peak(ArtifactCache(cache_dir), measure=False)
    compiled_for = target.tvm_target()
    return {"device_kind": target.details.get("kind", "unknown"), "threads_used": target.threads,
            "cores": target.cores, "peak_gflops": peak["gflops"] if peak else math.nan,
            "vector_bits": vector_bits(compiled_for) if compiled_for.kind.name == "llvm" else math.nan}


def hardware_descriptors(config: Config, cache_dir: str) -> dict:
    """The device's kind, the threads the trial runs with (0 means all cores), its cores, its
    float32 peak where it was measured (NaN otherwise) and its CPU target's vector width (the
    instruction-set level of one CPU held to different targets; NaN for GPUs)."""
    hardware = nest(config).get("hardware", {})
    return _device_descriptors(hardware.get("device", "host-cpu"), int(hardware.get("threads", 0)), cache_dir)


def descriptors(config: Config, cache_dir: str) -> dict:
    """Every static descriptor of ``config``."""
    return {**model_descriptors(config), **hardware_descriptors(config, cache_dir)}
