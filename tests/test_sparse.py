"""The CSR kernels (sparse_direct, sparse_gemm, sparse_spatial_pack) compute pruned convolutions
as PyTorch does, in both layouts, and store only the nonzeros."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from dlas_dse.stack.algorithms import apply_algorithm, build_pipeline
from dlas_dse.stack.algorithms.conv import ConvSpec
from dlas_dse.stack.algorithms.lowering import NotApplicable
from dlas_dse.stack.algorithms.sparse import sparse_lowering
from dlas_dse.stack.compilers import to_relax

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu()), "num-cores": 2})
ALGORITHMS = ["direct", "gemm", "spatial_pack"]
CASES = {  # (batch, in, out, size, kernel, stride, padding, dilation)
    "3to16_pad1": (1, 3, 16, 32, 3, 1, 1, 1),
    "64to128_stride2_batch2": (2, 64, 128, 16, 3, 2, 1, 1),
    "128to256_1x1_stride2": (1, 128, 256, 8, 1, 2, 0, 1),
    "16to32_dilation2_batch2": (2, 16, 32, 12, 3, 1, 2, 2),
}


class PrunedConv(torch.nn.Module):
    """One convolution with a random mask of ``sparsity`` on its weight, bias and ReLU (the
    epilogue the rewrite fuses into the kernel)."""

    def __init__(self, case: tuple, sparsity: float, groups: int = 1):
        super().__init__()
        _, channels, out, _, kernel, stride, padding, dilation = case
        self.conv = torch.nn.Conv2d(channels, out, kernel, stride, padding, dilation, groups)
        with torch.no_grad():
            self.conv.weight *= torch.rand_like(self.conv.weight) >= sparsity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("conv", ALGORITHMS)
def test_sparse_kernel_matches_pytorch(conv, layout, case):
    index = list(CASES).index(case)
    sparsity = (0.5, 0.9)[(index + (layout == "NHWC")) % 2]  # every shape at both sparsities per algorithm
    torch.manual_seed(index)
    batch, channels, _, size = CASES[case][:4]
    module = PrunedConv(CASES[case], sparsity).eval()
    mod, record = apply_algorithm(to_relax(module, (batch, channels, size, size)),
                                  {"conv": conv, "layout": layout, "format": "sparse"})
    assert record["convolutions_by_algorithm"] == {f"sparse_{conv}": 1}
    assert record["algorithm_fallbacks"] == {}
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET, relax_pipeline=build_pipeline(TARGET)), tvm.cpu())
    data = torch.randn(batch, channels, size, size)
    out = vm["main"](tvm.runtime.tensor(data.numpy()))
    with torch.no_grad():
        expected = module(data).numpy()
    np.testing.assert_allclose((out[0] if not hasattr(out, "numpy") else out).numpy(), expected,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conv", ALGORITHMS)
def test_only_nonzeros_are_stored(conv):
    spec = ConvSpec(1, 16, 8, 8, 32, 3, 3, padding=(1, 1, 1, 1))
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((32, 16, 3, 3)) * (rng.random((32, 16, 3, 3)) >= 0.8)).astype(np.float32)
    weight[5] = 0  # an empty row
    lowering = sparse_lowering(conv, spec, weight)
    values, index, indptr = lowering.constants
    assert lowering.algorithm == f"sparse_{conv}"
    assert len(values) == len(index) == indptr[-1] == np.count_nonzero(weight)
    assert indptr[5] == indptr[6]
    rows = np.repeat(np.arange(32), np.diff(indptr))
    if conv == "direct":  # per-nonzero (channel, kh, kw)
        assert np.array_equal(weight[rows, index[:, 0], index[:, 1], index[:, 2]], values)
    else:
        assert np.array_equal(weight.reshape(32, -1)[rows, index], values)


def test_grouped_and_quantised_convolutions_are_not_applicable():
    weight = np.ones((8, 1, 3, 3), np.float32)
    with pytest.raises(NotApplicable, match="grouped"):
        sparse_lowering("gemm", ConvSpec(1, 8, 8, 8, 8, 3, 3, groups=8), weight)
    with pytest.raises(NotApplicable, match="float32"):
        sparse_lowering("direct", ConvSpec(1, 1, 8, 8, 8, 3, 3, data_dtype="int8", weight_dtype="int8",
                                           out_dtype="int32"), weight)


def test_depthwise_sparse_falls_back_to_dense_direct():
    module = PrunedConv((1, 8, 8, 8, 3, 1, 1, 1), 0.5, groups=8).eval()
    _, record = apply_algorithm(to_relax(module, (1, 8, 8, 8)), {"conv": "gemm", "format": "sparse"})
    assert record["convolutions_by_algorithm"] == {"direct": 1}
    (reason,) = record["algorithm_fallbacks"]
    assert "grouped" in reason
