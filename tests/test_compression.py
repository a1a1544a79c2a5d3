"""Each compression technique keeps its promise in the deployed TVM module and matches PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

from dlas_dse.config import settings_with_defaults
from dlas_dse.stack.algorithms.int8_dot import dot_product
from dlas_dse.stack.compilers import fold_batchnorm
from dlas_dse.stack.compression import global_magnitude_masks
from dlas_dse.trial import execute

SETTINGS = settings_with_defaults({
    "evaluation": {"batch_size": 16, "max_samples": 32},
    "measurement": {"warmup_runs": 1, "min_repeats": 3, "max_repeats": 10, "min_time_s": 0.05},
    "verification": {"samples": 2, "tolerance": 1e-3}})
FINE_TUNE = {"compression.finetune_epochs": 1, "compression.finetune_learning_rate": 0.01}
TECHNIQUES = {
    "none": {},
    "weight_pruning": {"compression.sparsity": 0.7, "compression.max_layer_sparsity": 0.95, **FINE_TUNE},
    "channel_pruning": {"compression.ratio": 0.5, **FINE_TUNE},
    "fp16": {},
    "int8": {"compression.calibration_images": 256},
}


def _int8_weight_bytes(target: dict) -> int:
    """Bytes per deployed int8-layer weight on ``target``: 1, or 2 where its dot-product instruction
    multiplies int16 (``vpmaddwd`` on x86 without VNNI)."""
    dot = dot_product(tvm.target.Target(target))
    return np.dtype(dot.weight_dtype).itemsize if dot else 1


def _config(architecture: str, technique: str, **algorithm: str) -> dict:
    return {"dataset.name": "digits", "dataset.image_size": 32, "dataset.val_fraction": 0.2,
            "dataset.split_seed": 0, "model.architecture": architecture, "model.epochs": 1,
            "model.learning_rate": 0.05, "model.batch_size": 64, "model.seed": 0, "model.weights": "",
            "compression.technique": technique, **TECHNIQUES[technique], "algorithm.conv": "direct",
            **{f"algorithm.{key}": value for key, value in algorithm.items()}, "software.compiler": "tvm", "software.tuning": "untuned", "hardware.device": "host-cpu",
            "hardware.threads": 2}


def test_global_masks_hit_the_target_and_respect_the_layer_cap():
    torch.manual_seed(0)
    weights = [torch.randn(64, 3, 3, 3), torch.randn(10, 64) * 0.01, torch.randn(128, 64, 1, 1)]
    masks = global_magnitude_masks(weights, target=0.6, layer_cap=0.9)
    total = sum(w.numel() for w in weights)
    assert sum(int((m == 0).sum()) for m in masks) == round(0.6 * total)
    # the tiny classifier would be removed entirely by plain global pruning: capped at 90%
    assert int((masks[1] == 0).sum()) == int(0.9 * weights[1].numel())
    for weight, mask in zip(weights, masks):  # the zeroed weights are the smallest of their layer
        kept, removed = weight.abs()[mask == 1], weight.abs()[mask == 0]
        assert removed.max() <= kept.min()


@pytest.mark.slow
@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_mobilenet_v2_compressed_compiles_matches_and_keeps_its_promise(technique, shared_cache):
    result = execute(_config("mobilenet_v2", technique), SETTINGS, str(shared_cache))
    attrs, values = result.attributes, result.values
    record = attrs["compression"]
    assert attrs["verification"]["max_abs_error"] <= attrs["verification"]["allowed_error"]
    assert attrs["verification"]["top1_agreement"] == 1.0
    # float32 references are also run in float64 to measure their rounding; fp16 and int8 state a tolerance
    assert (attrs["verification"]["rounding_sensitivity"] is None) == (technique in ("fp16", "int8"))
    dense = execute(_config("mobilenet_v2", "none"), SETTINGS, str(shared_cache))
    dense_bytes = dense.values["size_bytes"]
    if technique == "none":
        assert record == {"hit": record["hit"], "compressed": record["compressed"]}
    elif technique == "weight_pruning":
        # the target within one weight per layer, and dense deployment keeps 4 bytes per weight
        assert abs(record["zero_weights"] - 0.7 * record["prunable_weights"]) <= record["layers"]
        assert record["layer_sparsity_max"] <= 0.95 + 1e-9
        assert values["size_bytes"] == dense_bytes
    elif technique == "channel_pruning":
        assert record["channels_after"] < 0.6 * record["channels_before"]
        assert record["parameters_after"] < 0.4 * record["parameters_before"]
        assert values["size_bytes"] < 0.4 * dense_bytes
    elif technique == "fp16":
        assert record["precision"] == "float16"
        assert abs(values["size_bytes"] - dense_bytes / 2) < 1024  # 2 bytes per weight
        assert values["accuracy"] == pytest.approx(dense.values["accuracy"], abs=0.07)
    elif technique == "int8":
        assert record["precision"] == "int8" and attrs["build"]["int8_layers"] == 53
        assert attrs["build"]["float_layers"] == 0
        # 1 byte per weight + scales, or 2 where this CPU's dot product takes int16 weights (no VNNI)
        weight_bytes = _int8_weight_bytes(attrs["target"])  # the target the trial compiled for
        assert 0.9 * weight_bytes * dense_bytes / 4 < values["size_bytes"] < 1.33 * weight_bytes * dense_bytes / 4
        assert values["accuracy"] == pytest.approx(dense.values["accuracy"], abs=0.07)


@pytest.mark.slow
def test_channel_pruned_resnet18_keeps_residual_shapes(shared_cache):
    result = execute(_config("resnet18", "channel_pruning"), SETTINGS, str(shared_cache))
    record = result.attributes["compression"]
    assert record["channels_after"] < record["channels_before"]
    assert result.attributes["verification"]["top1_agreement"] == 1.0


@pytest.mark.slow
def test_sparse_trial_deploys_csr_weights_and_matches_pytorch(shared_cache):
    sparse = execute(_config("mobilenet_v2", "weight_pruning", conv="gemm", format="sparse"), SETTINGS,
                     str(shared_cache))
    dense = execute(_config("mobilenet_v2", "weight_pruning", conv="gemm"), SETTINGS, str(shared_cache))
    build = sparse.attributes["build"]
    assert sparse.attributes["verification"]["top1_agreement"] == 1.0
    assert build["convolutions_by_algorithm"] == {"sparse_gemm": 35, "direct": 17}  # depthwise stay dense
    assert sum(build["algorithm_fallbacks"].values()) == 17
    assert {c["algorithm"] for c in build["convolutions"]} == {"sparse_gemm", "direct"}
    # 70% zeros: CSR stores 4-byte values + 4-byte column indices of the 30% nonzeros
    assert sparse.values["size_bytes"] < 0.8 * dense.values["size_bytes"]
    assert sparse.values["accuracy"] == pytest.approx(dense.values["accuracy"], abs=0.04)  # same model


@pytest.mark.slow
@pytest.mark.parametrize("technique,conv,layout", [("int8", "spatial_pack", "NHWC"), ("int8", "gemm", "NCHW"),
                                                   ("fp16", "winograd", "NCHW"), ("fp16", "gemm", "NHWC")])
def test_quantized_trials_run_every_algorithm(technique, conv, layout, shared_cache):
    result = execute(_config("resnet18", technique, conv=conv, layout=layout), SETTINGS, str(shared_cache))
    attrs = result.attributes
    assert attrs["verification"]["max_abs_error"] <= attrs["verification"]["allowed_error"]
    assert attrs["build"]["convolutions_by_algorithm"].get(conv, 0) > 0
    if technique == "int8":
        assert attrs["build"]["int8_layers"] == 21


def test_fold_batchnorm_keeps_pruned_zeros():
    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight[0] = 0
    model = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(4)).eval()
    model[1].running_var.fill_(4.0)
    folded = fold_batchnorm(model)
    (conv_folded,) = [m for m in folded.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.count_nonzero(conv_folded.weight[0]) == 0 and torch.count_nonzero(conv_folded.weight[1]) > 0
