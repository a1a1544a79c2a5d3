"""``gemm``: im2col — every output pixel's receptive field copied into an explicit patch matrix —
followed by one matrix product with the weight matrix (per group).

NCHW computes ``weight[O, K] @ patches[K, P]`` (output pixels P contiguous), NHWC computes
``patches[P, K] @ weight[K, O]`` (output channels contiguous). Default schedule: the shared
register tile, vectorized along the contiguous output dimension."""

from __future__ import annotations

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import ALGORITHMS
from dlas_dse.stack.algorithms.conv import ConvSpec, accumulate, pad_input
from dlas_dse.stack.algorithms.lowering import Lowering
from dlas_dse.stack.algorithms.schedule import default_schedule, tile_reduction
from dlas_dse.stack.algorithms.sparse import sparse_lowering

te = lazy_import("tvm.te")


def patch_matrix(padded: te.Tensor, spec: ConvSpec) -> te.Tensor:
    """The im2col matrix: ``[N, K_all, P]`` for NCHW with K ordered (group, channel, kh, kw), or
    ``[N, P, K_all]`` for NHWC with K ordered (group, kh, kw, channel)."""
    taps = spec.kernel_h * spec.kernel_w
    rows = spec.in_channels * taps
    pixels = spec.out_height * spec.out_width

    def source(k, p):
        group, within = k // spec.reduction, k % spec.reduction
        if spec.layout == "NCHW":
            channel, tap = within // taps, within % taps
        else:
            tap, channel = within // spec.in_per_group, within % spec.in_per_group
        y = p // spec.out_width * spec.stride[0] + tap // spec.kernel_w * spec.dilation[0]
        x = p % spec.out_width * spec.stride[1] + tap % spec.kernel_w * spec.dilation[1]
        return group * spec.in_per_group + channel, y, x

    if spec.layout == "NCHW":
        def patch(n, k, p):
            channel, y, x = source(k, p)
            return padded[n, channel, y, x]
        return te.compute((spec.batch, rows, pixels), patch, name="patches")

    def patch(n, p, k):
        channel, y, x = source(k, p)
        return padded[n, y, x, channel]
    return te.compute((spec.batch, pixels, rows), patch, name="patches")


def gemm_compute(spec: ConvSpec):
    """TE compute: patch matrix, matrix product with the ``[O, K]`` (NCHW) or ``[K, O]`` (NHWC)
    weight matrix, reshape to the output."""
    pixels = spec.out_height * spec.out_width

    def compute(data: te.Tensor, weight: te.Tensor) -> te.Tensor:
        patches = patch_matrix(pad_input(data, spec), spec)
        r = te.reduce_axis((0, spec.reduction), "k")

        def row(o):
            return o // spec.out_per_group * spec.reduction + r

        if spec.layout == "NCHW":
            product = te.compute(
                (spec.batch, spec.out_channels, pixels),
                lambda n, o, p: te.sum(accumulate(weight[o, r], spec) * accumulate(patches[n, row(o), p], spec),
                                       axis=r),
                name="conv", attrs={"dlas.schedule": "gemm"})
            return te.compute(spec.out_shape(), lambda n, o, y, x: product[n, o, y * spec.out_width + x],
                              name="unflatten")
        product = te.compute(
            (spec.batch, pixels, spec.out_channels),
            lambda n, p, o: te.sum(accumulate(patches[n, p, row(o)], spec) * accumulate(weight[r, o], spec), axis=r),
            name="conv", attrs={"dlas.schedule": "gemm"})
        return te.compute(spec.out_shape(), lambda n, y, x, o: product[n, y * spec.out_width + x, o],
                          name="unflatten")

    return compute


@ALGORITHMS.register("gemm")
def gemm(spec: ConvSpec, weight: np.ndarray, params: dict) -> Lowering:
    """im2col + matrix product (every shape; a grouped convolution is one product per group)."""
    if params.get("format") == "sparse":
        return sparse_lowering("gemm", spec, weight)
    if spec.layout == "NCHW":  # [O, K] with K = (channel, kh, kw)
        matrix = weight.reshape(spec.out_channels, spec.reduction)
    else:  # [K, O] with K = (kh, kw, channel)
        matrix = weight.transpose(2, 3, 1, 0).reshape(spec.reduction, spec.out_channels)
    return Lowering("gemm", gemm_compute(spec), [np.ascontiguousarray(matrix)])


@default_schedule("gemm")
def schedule_gemm(sch, block, vector_bits: int) -> None:
    """The middle axis (output channels for NCHW, pixels for NHWC) in registers, the contiguous
    last axis in a vector."""
    tile_reduction(sch, block, vector_bits, vector_axis=2, register_axis=1)
