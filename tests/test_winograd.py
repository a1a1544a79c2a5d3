"""Layer 4 ``winograd``: the derived transforms, numerical agreement with PyTorch in both layouts
and both tile sizes, and the fallback to ``direct`` where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import tvm
from tvm import relax

from dlas_dse.stack.algorithms import apply_algorithm, build_pipeline
from dlas_dse.stack.algorithms.conv import ConvSpec
from dlas_dse.stack.algorithms.lowering import NotApplicable
from dlas_dse.stack.algorithms.winograd import transform_matrices, winograd
from dlas_dse.stack.compilers import to_relax

TOLERANCE = {2: 1e-5, 4: 1e-4}
"""Largest allowed max |error| / max |reference| in float32 (reference in float64). F(2×2, 3×3)'s
transforms hold only 0, ±1 and ½: it is as exact as direct (≤ 7e-7 measured, direct ~1e-6).
F(4×4, 3×3)'s hold entries up to 8 and G's 1/24, which amplify rounding about tenfold (≤ 5e-6
measured on these shapes, 1e-5 at 256 channels): both limits leave a margin of ten or more."""


def build(module: nn.Module, shape: tuple[int, ...], params: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run ``module`` (one convolution) on a random input of ``shape`` after the layer-4 rewrite
    with ``params``; returns the output, PyTorch's (in float64) and the rewrite's record."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu()),
                                "num-cores": 2})
    mod, record = apply_algorithm(to_relax(module.eval(), shape), {"format": "dense", **params})
    machine = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=build_pipeline(target)), tvm.cpu())
    data = torch.randn(shape)
    output = machine["main"](tvm.runtime.tensor(data.numpy()))
    output = output if hasattr(output, "numpy") else output[0]
    conv = module.double()
    reference = F.conv2d(data.double(), conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return output.numpy(), reference.detach().numpy(), record


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_1d_correlation(m):
    a, b, g = transform_matrices(m)
    assert a.shape == (m + 2, m) and b.shape == (m + 2, m + 2) and g.shape == (m + 2, 3)
    rng = np.random.default_rng(m)
    for _ in range(10):
        d, kernel = rng.standard_normal(m + 2), rng.standard_normal(3)
        direct = np.array([d[i:i + 3] @ kernel for i in range(m)])
        np.testing.assert_allclose(a.T @ ((g @ kernel) * (b.T @ d)), direct, atol=1e-12)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("batch, channels, out_channels, size, padding", [
    (1, 3, 16, 32, 1),   # few input channels
    (1, 64, 64, 8, 1),   # a deep layer: one or four tiles
    (2, 16, 32, 7, 1),   # odd size: partial tiles on the bottom and right
    (1, 16, 8, 9, 0),    # no padding: 7x7 output, partial tiles
    (1, 1, 3, 10, 1),    # one input channel (grayscale stem): no channel vector
])
def test_matches_pytorch(layout, m, batch, channels, out_channels, size, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, out_channels, 3, padding=padding)
    params = {"conv": "winograd", "tile": m, "layout": layout}
    output, reference, record = build(conv, (batch, channels, size, size), params)
    assert record["convolutions_by_algorithm"] == {"winograd": 1}
    assert record["algorithm_fallbacks"] == {}
    assert output.shape == reference.shape
    assert np.abs(output - reference).max() <= TOLERANCE[m] * np.abs(reference).max()


@pytest.mark.parametrize("conv", [nn.Conv2d(8, 16, 1), nn.Conv2d(8, 16, 3, stride=2, padding=1)],
                         ids=["1x1", "stride2"])
def test_falls_back_to_direct(conv):
    torch.manual_seed(0)
    output, reference, record = build(conv, (1, 8, 8, 8), {"conv": "winograd"})
    assert record["convolutions_by_algorithm"] == {"direct": 1}
    [reason] = record["algorithm_fallbacks"]
    assert "winograd needs a 3x3 stride-1 dense float convolution" in reason
    np.testing.assert_allclose(output, reference, atol=1e-4)


@pytest.mark.parametrize("spec, params, reason", [
    (ConvSpec(1, 8, 8, 8, 8, 3, 3, padding=(1, 1, 1, 1)), {"format": "sparse"}, "no sparse variant"),
    (ConvSpec(1, 8, 8, 8, 8, 3, 3, groups=8), {}, "dense float"),
    (ConvSpec(1, 8, 8, 8, 8, 3, 3, dilation=(2, 2)), {}, "dense float"),
    (ConvSpec(1, 8, 8, 8, 8, 3, 3, data_dtype="int8", weight_dtype="int8", out_dtype="int32"), {}, "dense float"),
])
def test_not_applicable(spec, params, reason):
    with pytest.raises(NotApplicable, match=reason):
        winograd(spec, np.zeros((8, 8 // spec.groups, 3, 3), "float32"), params)
