"""``nchwc``: the whole model in blocked channels (NCHW[x]c, ``x`` = the block, by default the
target's float32 vector lanes), so that a vector always holds ``x`` channels of one pixel.

The model's layout is changed once (Relax's ConvertLayout): activations, bias additions, residual
additions and pooling stay blocked between convolutions, and layout transforms remain only where
the model enters or leaves the blocked layout (the input, a convolution whose channels the block
does not divide, the classifier). Weights are packed at build time: dense convolutions as
OIHW[x]i[x]o, grouped and depthwise ones as OIHW[x]o.

int8 convolutions whose block is the width of the target's dot-product instruction (VNNI's 16
lanes with 16-channel blocks, AVX2's 8 with 8, AArch64 sdot's 4 with 4) reduce groups of 4 (or 2)
input channels of a block per instruction, as :mod:`.int8_dot` does for NCHW: the input shifted
into the instruction's dtype once per convolution, the weights packed OIHW[x/g]i[x]o[g]i.

Default schedule: a register tile of output pixels (up to 24 on AVX-512: the 4×4 layers entirely)
× one vector of a block's output channels, accumulated over the whole reduction (dense:
input-channel blocks, kernel taps, channels of a block), run in parallel over batch, channel
blocks and pixel tiles.
"""

from __future__ import annotations

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import ALGORITHMS, Param
from dlas_dse.stack.algorithms.conv import ConvSpec, accumulate, pad_input
from dlas_dse.stack.algorithms.int8_dot import INTRINSIC_KEY, DotProduct, clamp, dot_product, tile_on_instruction
from dlas_dse.stack.algorithms.lowering import Lowering, NotApplicable
from dlas_dse.stack.algorithms.schedule import (default_schedule, largest_divisor, lanes, tile_reduction,
                                              vector_bits, vectorize_write_back)

tvm = lazy_import("tvm")
te = lazy_import("tvm.te")

DEFAULT_BLOCK = 16
"""Channels per block where no target says its vector width (16 float32 lanes: AVX-512)."""


def block_size(params: dict) -> int:
    """The block: ``params["block"]``, else the target's float32 vector lanes; 0 on a target that is
    not a CPU (a GPU has no vector registers to fill: the model stays NCHW there)."""
    target = params.get("target")
    if target is not None and target.kind.name != "llvm":
        return 0
    if params.get("block"):
        return params["block"]
    return vector_bits(target) // 32 if target is not None else DEFAULT_BLOCK


def layouts(params: dict) -> tuple[str, str]:
    """The model's data and kernel layouts under ``nchwc`` (the ``layouts`` trait)."""
    block = block_size(params)
    return (f"NCHW{block}c", f"OIHW{block}o") if block else ("NCHW", "OIHW")


def dense_compute(spec: ConvSpec):
    """TE compute of a dense convolution on blocked data from an OIHW[x]i[x]o weight."""
    stride_h, stride_w = spec.stride
    dilation_h, dilation_w = spec.dilation
    block = spec.block

    def compute(data: te.Tensor, weight: te.Tensor) -> te.Tensor:
        padded = pad_input(data, spec)
        channel_block = te.reduce_axis((0, spec.in_channels // block), "channel_block")
        channel = te.reduce_axis((0, block), "channel")
        row = te.reduce_axis((0, spec.kernel_h), "kh")
        column = te.reduce_axis((0, spec.kernel_w), "kw")
        return te.compute(
            spec.out_shape(),
            lambda n, o, y, x, vo: te.sum(
                accumulate(padded[n, channel_block, y * stride_h + row * dilation_h,
                                  x * stride_w + column * dilation_w, channel], spec)
                * accumulate(weight[o, channel_block, row, column, channel, vo], spec),
                axis=[channel_block, row, column, channel]),
            name="conv", attrs={"dlas.schedule": "nchwc"})

    return compute


def grouped_compute(spec: ConvSpec):
    """TE compute of a grouped (or depthwise) convolution on blocked data from an OIHW[x]o weight."""
    stride_h, stride_w = spec.stride
    dilation_h, dilation_w = spec.dilation
    block = spec.block
    depthwise = spec.in_per_group == spec.out_per_group == 1

    def compute(data: te.Tensor, weight: te.Tensor) -> te.Tensor:
        padded = pad_input(data, spec)
        channel = te.reduce_axis((0, spec.in_per_group), "channel")
        row = te.reduce_axis((0, spec.kernel_h), "kh")
        column = te.reduce_axis((0, spec.kernel_w), "kw")

        def output(n, o, y, x, vo):
            if depthwise:  # input channel = output channel: the same block and lane
                source_block, source_lane = o, vo
            else:
                source = (o * block + vo) // spec.out_per_group * spec.in_per_group + channel
                source_block, source_lane = source // block, source % block
            pixel = padded[n, source_block, y * stride_h + row * dilation_h, x * stride_w + column * dilation_w,
                           source_lane]
            return te.sum(accumulate(pixel, spec) * accumulate(weight[o, channel, row, column, vo], spec),
                          axis=[channel, row, column])

        return te.compute(spec.out_shape(), output, name="conv", attrs={"dlas.schedule": "nchwc_grouped"})

    return compute


def dot_compute(spec: ConvSpec, dot: DotProduct):
    """TE compute of a dense int8 convolution on blocked data, its inner ``lanes × group`` loops
    one ``dot`` instruction, from packed weights and the per-channel correction of the shift."""
    stride_h, stride_w = spec.stride
    dilation_h, dilation_w = spec.dilation
    top, left, bottom, right = spec.padding
    block, group = spec.block, dot.group

    def compute(data: te.Tensor, weight: te.Tensor, correction: te.Tensor) -> te.Tensor:
        def shifted(n, c, y, x, lane):  # padded and shifted in one pass: the border is the offset too
            inside = tvm.tirx.all(y >= top, y < top + spec.height, x >= left, x < left + spec.width)
            value = data[n, c, clamp(y - top, spec.height), clamp(x - left, spec.width), lane]
            return tvm.tirx.if_then_else(inside, (value.astype("int32") + dot.data_offset).astype(dot.data_dtype),
                                         tvm.tirx.const(dot.data_offset, dot.data_dtype))

        padded = te.compute((spec.batch, spec.in_channels // block, spec.height + top + bottom,
                             spec.width + left + right, block), shifted, name="shift_input")
        channel_block = te.reduce_axis((0, spec.in_channels // block), "channel_block")
        row = te.reduce_axis((0, spec.kernel_h), "kh")
        column = te.reduce_axis((0, spec.kernel_w), "kw")
        quad = te.reduce_axis((0, block // group), "channel_group")
        lane = te.reduce_axis((0, group), "in_lane")
        products = te.compute(
            spec.out_shape(),
            lambda n, o, y, x, vo: te.sum(
                padded[n, channel_block, y * stride_h + row * dilation_h, x * stride_w + column * dilation_w,
                       quad * group + lane].astype("int32")
                * weight[o, channel_block, row, column, quad, vo, lane].astype("int32"),
                axis=[channel_block, row, column, quad, lane]),
            name="conv", attrs={"dlas.schedule": "nchwc_dot", INTRINSIC_KEY: dot.intrinsic})
        return te.compute(spec.out_shape(), lambda n, o, y, x, vo: products[n, o, y, x, vo] - correction[o * block + vo],
                          name="unshift")

    return compute


def _dot_lowering(spec: ConvSpec, weight: np.ndarray, params: dict) -> Lowering | None:
    """The int8 convolution on the target's dot-product instruction, where its lanes are the block."""
    dot = dot_product(params.get("target"))
    if (dot is None or dot.lanes != spec.block or spec.groups > 1 or spec.out_dtype != "int32"
            or not spec.data_dtype == spec.weight_dtype == "int8"):
        return None
    block, group = spec.block, dot.group
    out_blocks, in_blocks = spec.out_channels // block, spec.in_channels // block
    packed = weight.reshape(out_blocks, block, in_blocks, block // group, group, spec.kernel_h, spec.kernel_w)
    packed = packed.transpose(0, 2, 5, 6, 3, 1, 4)  # OIHW[x/g]i[x]o[g]i
    correction = dot.data_offset * weight.astype(np.int64).sum(axis=(1, 2, 3))
    return Lowering(f"nchwc_{dot.name}", dot_compute(spec, dot),
                    [np.ascontiguousarray(packed.astype(dot.weight_dtype)), correction.astype(np.int32)])


@ALGORITHMS.register("nchwc", traits={"layouts": layouts},
                     block=Param(int, default=0, low=0, high=64,
                                 help="channels per block (0: the target's float32 vector lanes, e.g. 16 "
                                      "with AVX-512, 8 with AVX2); convolutions whose channels it does not "
                                      "divide stay NCHW (direct)"))
def nchwc(spec: ConvSpec, weight: np.ndarray, params: dict) -> Lowering:
    """The model in channel blocks of the vector width (NCHW[x]c), weights packed at build time;
    layout transforms only where the model enters or leaves the blocked layout."""
    if spec.layout != "NCHWc":
        block = block_size(params)
        raise NotApplicable(f"its channels ({spec.in_channels} in, {spec.out_channels} out, {spec.groups} groups) "
                            f"do not fill blocks of {block}: it stays NCHW" if block else
                            "nchwc fills a CPU's vector registers; this target is not a CPU: the model stays NCHW")
    dot = _dot_lowering(spec, weight, params)
    if dot is not None:
        return dot
    block = spec.block
    blocks = spec.out_channels // block
    by_output_block = weight.reshape(blocks, block, *weight.shape[1:])  # [O/x, x, I/g, KH, KW]
    if spec.groups > 1:
        packed = by_output_block.transpose(0, 2, 3, 4, 1)  # OIHW[x]o
        return Lowering("nchwc", grouped_compute(spec), [np.ascontiguousarray(packed)])
    packed = by_output_block.reshape(blocks, block, spec.in_channels // block, block, spec.kernel_h,
                                     spec.kernel_w).transpose(0, 2, 4, 5, 3, 1)  # OIHW[x]i[x]o
    return Lowering("nchwc", dense_compute(spec), [np.ascontiguousarray(packed)])


@default_schedule("nchwc")
@default_schedule("nchwc_grouped")
def schedule_nchwc(sch, block, vector_bits: int) -> None:
    """A tile of output pixels (columns first, then rows) in registers, a block's output channels in
    a vector: each weight vector loaded serves the whole tile."""
    tile_reduction(sch, block, vector_bits, vector_axis=4, register_axis=(2, 3),
                   register_tile=accumulators(vector_bits))


@default_schedule("nchwc_dot")
def schedule_nchwc_dot(sch, block, vector_bits: int) -> None:
    """A tile of output pixels in registers, each accumulator a vector of a block's output
    channels, the inner ``lanes × group`` loops one dot-product instruction."""
    batch, out_block, row, column, lane, *reduction = sch.get_loops(block)
    budget = accumulators(vector_bits)
    columns = largest_divisor(int(sch.get(column).extent), budget)
    rows = largest_divisor(int(sch.get(row).extent), budget // columns)
    row, row_tile = sch.split(row, [None, rows])
    column, column_tile = sch.split(column, [None, columns])
    write_back = tile_on_instruction(sch, block, [batch, out_block, row, column], [row_tile, column_tile],
                                     reduction, lane, inline=True)
    vectorize_write_back(sch, write_back, lanes(vector_bits, "int32"))


def accumulators(vector_bits: int) -> int:
    """Accumulators a register tile may hold: all vector registers but a few for the weight
    vector and the broadcast inputs (AVX-512 and AArch64 have 32, AVX2 16)."""
    return 24 if vector_bits >= 512 else 12
