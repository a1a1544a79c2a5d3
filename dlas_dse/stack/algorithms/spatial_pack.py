"""``spatial_pack``: the input is packed into spatial tiles (each output row's columns split into
tiles, the receptive field of a tile copied contiguously) and the weight into output-channel
tiles; the product is computed tile by tile, then unpacked into the output layout.

Default schedule: a register tile of ``spatial_tile`` output columns × a vector of
``channel_tile`` output channels, accumulated over the whole reduction."""

from __future__ import annotations

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import ALGORITHMS, Param
from dlas_dse.stack.algorithms.conv import ConvSpec, accumulate, pad_input
from dlas_dse.stack.algorithms.lowering import Lowering, NotApplicable
from dlas_dse.stack.algorithms.schedule import default_schedule, largest_divisor, tile_reduction
from dlas_dse.stack.algorithms.sparse import sparse_lowering

te = lazy_import("tvm.te")


def spatial_pack_compute(spec: ConvSpec, channel_tile: int, column_tile: int):
    """TE compute from a weight packed as ``[O / channel_tile, C, KH, KW, channel_tile]``."""
    stride_h, stride_w = spec.stride
    dilation_h, dilation_w = spec.dilation
    window_h = (spec.kernel_h - 1) * dilation_h + 1
    window_w = (column_tile - 1) * stride_w + (spec.kernel_w - 1) * dilation_w + 1
    column_tiles = spec.out_width // column_tile
    channel_tiles = spec.out_channels // channel_tile

    def compute(data: te.Tensor, weight: te.Tensor) -> te.Tensor:
        padded = pad_input(data, spec)

        def window(n, y, tile, c, r, t):
            row, column = y * stride_h + r, tile * column_tile * stride_w + t
            return padded[n, c, row, column] if spec.layout == "NCHW" else padded[n, row, column, c]

        packed = te.compute((spec.batch, spec.out_height, column_tiles, spec.in_channels, window_h, window_w),
                            window, name="packed_input")
        channel = te.reduce_axis((0, spec.in_channels), "channel")
        row = te.reduce_axis((0, spec.kernel_h), "kh")
        column = te.reduce_axis((0, spec.kernel_w), "kw")
        tiles = te.compute(
            (spec.batch, channel_tiles, spec.out_height, column_tiles, column_tile, channel_tile),
            lambda n, co, y, tile, vx, vc: te.sum(
                accumulate(packed[n, y, tile, channel, row * dilation_h, vx * stride_w + column * dilation_w], spec)
                * accumulate(weight[co, channel, row, column, vc], spec), axis=[channel, row, column]),
            name="conv", attrs={"dlas.schedule": "spatial_pack"})

        def unpack(n, *index):
            o, y, x = (index[0], index[1], index[2]) if spec.layout == "NCHW" else (index[2], index[0], index[1])
            return tiles[n, o // channel_tile, y, x // column_tile, x % column_tile, o % channel_tile]

        return te.compute(spec.out_shape(), unpack, name="unpack")

    return compute


@ALGORITHMS.register("spatial_pack",
                     channel_tile=Param(int, default=16, low=1, high=256,
                                        help="output channels per tile (the vectorized axis); the largest divisor "
                                             "of a layer's channels not above it is used"),
                     spatial_tile=Param(int, default=8, low=1, high=64,
                                        help="output columns per tile (the register tile); the largest divisor of "
                                             "a layer's output width not above it is used"))
def spatial_pack(spec: ConvSpec, weight: np.ndarray, params: dict) -> Lowering:
    """Tiles of output columns × output channels over packed input windows (dense convolutions;
    grouped and depthwise ones use direct)."""
    if params.get("format") == "sparse":
        return sparse_lowering("spatial_pack", spec, weight)
    if spec.groups > 1:
        raise NotApplicable("spatial_pack packs whole channel tiles; grouped and depthwise convolutions use direct")
    channel_tile = largest_divisor(spec.out_channels, params.get("channel_tile", 16))
    column_tile = largest_divisor(spec.out_width, params.get("spatial_tile", 8))
    packed = weight.reshape(spec.out_channels // channel_tile, channel_tile, *weight.shape[1:]).transpose(0, 2, 3, 4, 1)
    return Lowering("spatial_pack", spatial_pack_compute(spec, channel_tile, column_tile),
                    [np.ascontiguousarray(packed)])


@default_schedule("spatial_pack")
def schedule_spatial_pack(sch, block, vector_bits: int) -> None:
    """The column tile in registers, the channel tile in a vector."""
    tile_reduction(sch, block, vector_bits, vector_axis=5, register_axis=4)
