"""``direct``: the convolution's definition as a loop nest, in NCHW or NHWC, any groups.

Default schedule: a register tile of output channels × a vector of output columns (NCHW) or of
output columns × a vector of output channels (NHWC), accumulated over the whole reduction."""

from __future__ import annotations

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import ALGORITHMS
from dlas_dse.stack.algorithms.conv import ConvSpec, accumulate, pad_input
from dlas_dse.stack.algorithms.int8_dot import applies, dot_lowering, dot_product
from dlas_dse.stack.algorithms.lowering import Lowering
from dlas_dse.stack.algorithms.schedule import default_schedule, tile_reduction
from dlas_dse.stack.algorithms.sparse import sparse_lowering

te = lazy_import("tvm.te")


def direct_compute(spec: ConvSpec):
    """TE compute of the convolution from an OIHW (NCHW) or HWIO (NHWC) weight."""
    stride_h, stride_w = spec.stride
    dilation_h, dilation_w = spec.dilation

    def compute(data: te.Tensor, weight: te.Tensor) -> te.Tensor:
        padded = pad_input(data, spec)
        channel = te.reduce_axis((0, spec.in_per_group), "channel")
        row = te.reduce_axis((0, spec.kernel_h), "kh")
        column = te.reduce_axis((0, spec.kernel_w), "kw")

        def source_channel(o):
            return o // spec.out_per_group * spec.in_per_group + channel

        if spec.layout == "NCHW":
            def output(n, o, y, x):
                pixel = padded[n, source_channel(o), y * stride_h + row * dilation_h, x * stride_w + column * dilation_w]
                return te.sum(accumulate(pixel, spec) * accumulate(weight[o, channel, row, column], spec),
                              axis=[channel, row, column])
        else:
            def output(n, y, x, o):
                pixel = padded[n, y * stride_h + row * dilation_h, x * stride_w + column * dilation_w, source_channel(o)]
                return te.sum(accumulate(pixel, spec) * accumulate(weight[row, column, channel, o], spec),
                              axis=[row, column, channel])

        return te.compute(spec.out_shape(), output, name="conv",
                          attrs={"dlas.schedule": f"direct_{spec.layout.lower()}"})

    return compute


@ALGORITHMS.register("direct")
def direct(spec: ConvSpec, weight: np.ndarray, params: dict) -> Lowering:
    """The convolution as its definition (every shape, every group count); int8 ones on the
    target's dot-product instruction where it has one (:mod:`.int8_dot`)."""
    if params.get("format") == "sparse":
        return sparse_lowering("direct", spec, weight)
    dot = dot_product(params.get("target"))
    if dot is not None and applies(spec, params):
        return dot_lowering(spec, weight, dot)
    stored = weight if spec.layout == "NCHW" else np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    return Lowering("direct", direct_compute(spec), [stored])


@default_schedule("direct_nchw")
def schedule_direct_nchw(sch, block, vector_bits: int) -> None:
    """Output channels in registers, output columns in a vector."""
    tile_reduction(sch, block, vector_bits, vector_axis=3, register_axis=1)


@default_schedule("direct_nhwc")
def schedule_direct_nhwc(sch, block, vector_bits: int) -> None:
    """Output columns in registers, output channels in a vector."""
    tile_reduction(sch, block, vector_bits, vector_axis=3, register_axis=2)
