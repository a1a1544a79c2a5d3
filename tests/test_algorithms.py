"""Every layer-4 algorithm computes every distinct convolution of the seven models as PyTorch
does (dense, and sparse at 50% and 90% sparsity), and whole models match PyTorch too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from dlas_dse.registry import MODELS
from dlas_dse.stack.algorithms import apply_algorithm, convolutions, build_pipeline
from dlas_dse.stack.algorithms.conv import ConvSpec, conv_module, spec_from_call
from dlas_dse.stack.compilers import fold_batchnorm, to_relax

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu()), "num-cores": 2})
TOLERANCE = 1e-4
"""Largest error allowed, relative to the largest magnitude of PyTorch's output."""
EXTRA_SHAPES = [  # what the models at 32x32 do not have: dilation, asymmetric padding, batch 2
    ConvSpec(1, 16, 12, 12, 24, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    ConvSpec(1, 8, 11, 11, 16, 3, 3, (2, 2), (0, 0, 1, 1)),
    ConvSpec(2, 12, 9, 9, 12, 3, 3, (1, 1), (1, 1, 1, 1), groups=3),
]


@pytest.fixture(scope="module")
def shapes() -> list[ConvSpec]:
    """Every distinct convolution of the seven models at 32x32 (CIFAR stems), plus EXTRA_SHAPES."""
    found: dict[ConvSpec, None] = {}
    for name in MODELS.names():
        mod = to_relax(MODELS.get(name).function(10, 32).eval(), (1, 3, 32, 32))
        found.update((spec_from_call(call, "float32"), None) for call in convolutions(mod))
    return [*found, *EXTRA_SHAPES]


def random_weight(spec: ConvSpec, rng: np.random.Generator, sparsity: float = 0.0) -> np.ndarray:
    weight = rng.standard_normal((spec.out_channels, spec.in_per_group, spec.kernel_h, spec.kernel_w))
    return (weight * (rng.random(weight.shape) >= sparsity)).astype(np.float32)


def reference(spec: ConvSpec, data: np.ndarray, weight: np.ndarray) -> np.ndarray:
    top, left, bottom, right = spec.padding
    padded = F.pad(torch.from_numpy(data).double(), (left, right, top, bottom))
    return F.conv2d(padded, torch.from_numpy(weight).double(), None, spec.stride, 0, spec.dilation,
                    spec.groups).numpy()


def check_every_shape(specs: list[ConvSpec], params: dict, sparsity: float = 0.0) -> dict:
    """Compile all ``specs`` with the layer-4 ``params``, run each and compare with PyTorch;
    returns the rewrite's record."""
    rng = np.random.default_rng(0)
    weights = [random_weight(spec, rng, sparsity) for spec in specs]
    mod, record = apply_algorithm(conv_module(specs, weights), params)
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET, relax_pipeline=build_pipeline(TARGET)), tvm.cpu())
    errors = {}
    for index, (spec, weight) in enumerate(zip(specs, weights)):
        data = rng.standard_normal((spec.batch, spec.in_channels, spec.height, spec.width)).astype(np.float32)
        expected = reference(spec, data, weight)
        out = vm[f"conv{index}"](tvm.runtime.tensor(data)).numpy()  # NCHW at the boundary in every layout
        error = np.abs(out - expected).max() / max(np.abs(expected).max(), 1e-12)
        if not error <= TOLERANCE:
            errors[spec.describe()] = float(error)
    assert not errors, f"{len(errors)} of {len(specs)} convolutions differ from PyTorch: {errors}"
    return record


def fallbacks(record: dict) -> int:
    return sum(record["algorithm_fallbacks"].values())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("conv", ["direct", "gemm", "spatial_pack"])
def test_dense_algorithm_matches_pytorch_on_every_model_convolution(shapes, conv, layout):
    record = check_every_shape(shapes, {"conv": conv, "layout": layout, "format": "dense"})
    grouped = sum(spec.groups > 1 for spec in shapes)
    if conv == "spatial_pack":  # grouped and depthwise convolutions use direct, and say so
        assert record["convolutions_by_algorithm"] == {"spatial_pack": len(shapes) - grouped, "direct": grouped}
        assert fallbacks(record) == grouped
    else:
        assert record["convolutions_by_algorithm"] == {conv: len(shapes)}
        assert fallbacks(record) == 0
    assert len(record["convolutions"]) == len(shapes)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_matches_pytorch_on_every_model_convolution_it_applies_to(shapes, tile, layout):
    eligible = [s for s in shapes if (s.kernel_h, s.kernel_w, s.stride, s.dilation, s.groups) == (3, 3, (1, 1), (1, 1), 1)]
    assert len(eligible) >= 10
    record = check_every_shape(eligible, {"conv": "winograd", "tile": tile, "layout": layout, "format": "dense"})
    assert record["convolutions_by_algorithm"] == {"winograd": len(eligible)}


@pytest.mark.parametrize("layout,sparsity", [("NCHW", 0.5), ("NHWC", 0.9)])
@pytest.mark.parametrize("conv", ["direct", "gemm", "spatial_pack"])
def test_sparse_algorithm_matches_pytorch_on_every_model_convolution(shapes, conv, layout, sparsity):
    record = check_every_shape(shapes, {"conv": conv, "layout": layout, "format": "sparse"}, sparsity)
    grouped = sum(spec.groups > 1 for spec in shapes)
    assert record["convolutions_by_algorithm"] == {f"sparse_{conv}": len(shapes) - grouped, "direct": grouped}
    assert fallbacks(record) == grouped


def test_nchwc_matches_pytorch_on_every_model_convolution_its_blocks_fit(shapes):
    """Each convolution is alone in its function here, so each is blocked (and unblocked) at its
    own boundary; those whose channels the block does not divide stay NCHW and use direct. Blocks
    of 8 fit the most shapes (the whole models below use the default 16)."""
    block = 8
    record = check_every_shape(shapes, {"conv": "nchwc", "block": block, "layout": "NCHW", "format": "dense"})
    blocked = [u for u in record["convolutions"] if u["algorithm"] == "nchwc"]
    assert all(f"NCHW{block}c" in u["conv"] for u in blocked)
    assert all(f"do not fill blocks of {block}: it stays NCHW" in reason for reason in record["algorithm_fallbacks"])
    fits = [s for s in shapes if s.in_channels % block == 0 and s.out_channels % block == 0
            and (s.groups == 1 or s.in_per_group == s.out_per_group == 1)]
    assert len(blocked) == len(fits) and record["convolutions_by_algorithm"]["direct"] == len(shapes) - len(fits)


def _layout_transforms(mod: tvm.IRModule) -> int:
    from dlas_dse.stack.relax_util import is_op, visit_functions

    found = []
    visit_functions(mod, lambda expr: found.append(expr) if is_op(expr, "relax.layout_transform") else None)
    return len(found)


@pytest.mark.parametrize("architecture,block,transforms", [("resnet18", 16, 3), ("mobilenet_v2", 8, 2)])
def test_nchwc_transforms_layouts_only_where_the_model_enters_or_leaves_its_blocks(architecture, block,
                                                                                   transforms):
    """resnet18: into the first blocked convolution, its residual branch, out to the classifier;
    mobilenet_v2 at 8 channels per block: in after the stem, out to the classifier (its ReLU6 too
    keeps the blocks). Every convolution but the 3-channel stem is blocked."""
    model = fold_batchnorm(randomised_model(architecture))
    mod, record = apply_algorithm(to_relax(model, (1, 3, 32, 32)), {"conv": "nchwc", "block": block})
    assert record["convolutions_by_algorithm"]["direct"] == 1 and _layout_transforms(mod) == transforms


def randomised_model(architecture: str) -> torch.nn.Module:
    """A model with random weights and BatchNorm statistics (folding them must be exact too)."""
    torch.manual_seed(0)
    model = MODELS.get(architecture).function(10, 32)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def check_model(architecture: str, conv: str, layout: str = "NCHW", batch: int = 1) -> dict:
    """Compile the randomised ``architecture`` with one algorithm; it must match PyTorch."""
    model = randomised_model(architecture)
    images = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        expected = fold_batchnorm(model)(images).numpy()
    mod, record = apply_algorithm(to_relax(model, (batch, 3, 32, 32)), {"conv": conv, "layout": layout, "format": "dense"})
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET, relax_pipeline=build_pipeline(TARGET)), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(images.numpy()))
    logits = (out[0] if not hasattr(out, "numpy") else out).numpy()
    assert np.abs(logits - expected).max() <= TOLERANCE * np.abs(expected).max(), f"{architecture} {conv} {layout}"
    return record


@pytest.mark.parametrize("conv,layout", [("direct", "NCHW"), ("direct", "NHWC"), ("gemm", "NCHW"),
                                         ("spatial_pack", "NCHW"), ("winograd", "NCHW"), ("nchwc", "NCHW")])
@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v2"])
def test_whole_model_matches_pytorch(architecture, conv, layout):
    record = check_model(architecture, conv, layout, batch=2)
    assert record["convolutions_by_algorithm"].get(conv, 0) > 0


@pytest.mark.parametrize("architecture,algorithms", [
    ("resnet50", ("gemm", "spatial_pack", "winograd")), ("vgg16_bn", ("gemm", "spatial_pack", "winograd")),
    ("efficientnet_b0", ("gemm", "spatial_pack", "winograd", "nchwc")), ("mnasnet1_0", ("gemm", "spatial_pack", "winograd")),
    ("densenet121", ("winograd",))])  # direct: tests/test_models.py compiles all seven
def test_other_models_match_pytorch_with_every_algorithm(architecture, algorithms):
    """Fused epilogues differ by model (SiLU, squeeze-excitation, concatenation): each default
    schedule must build them and stay exact."""
    for conv in algorithms:
        check_model(architecture, conv)
