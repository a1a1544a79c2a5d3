"""What a convolution is, independently of how it is computed: :class:`ConvSpec` and the pieces
every algorithm shares (zero padding, dtype casts)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from dlas_dse.lazy import lazy_import

tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")
te = lazy_import("tvm.te")


@dataclass(frozen=True)
class ConvSpec:
    """One 2-D convolution: shapes, stride, padding (top, left, bottom, right), dilation, groups,
    the data layout (``NCHW``, ``NHWC``, or ``NCHWc``: channels in blocks of ``block``, the block
    innermost) and the dtypes of input, weight and output."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    layout: str = "NCHW"
    data_dtype: str = "float32"
    weight_dtype: str = "float32"
    out_dtype: str = "float32"
    block: int = 0
    """Channels per block of the ``NCHWc`` layout (0 in the others)."""

    @property
    def out_height(self) -> int:
        """Rows of the output."""
        span = (self.kernel_h - 1) * self.dilation[0] + 1
        return (self.height + self.padding[0] + self.padding[2] - span) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        """Columns of the output."""
        span = (self.kernel_w - 1) * self.dilation[1] + 1
        return (self.width + self.padding[1] + self.padding[3] - span) // self.stride[1] + 1

    @property
    def in_per_group(self) -> int:
        """Input channels each output channel reads."""
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        """Output channels of each group."""
        return self.out_channels // self.groups

    @property
    def reduction(self) -> int:
        """Length of each output's dot product: input channels per group × kernel taps."""
        return self.in_per_group * self.kernel_h * self.kernel_w

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the dense convolution."""
        return self.batch * self.out_channels * self.out_height * self.out_width * self.reduction

    def data_shape(self) -> tuple[int, ...]:
        """Shape of the input in this spec's layout."""
        return self._shape(self.in_channels, self.height, self.width)

    def out_shape(self) -> tuple[int, ...]:
        """Shape of the output in this spec's layout."""
        return self._shape(self.out_channels, self.out_height, self.out_width)

    def _shape(self, channels: int, height: int, width: int) -> tuple[int, ...]:
        if self.layout == "NCHW":
            return (self.batch, channels, height, width)
        if self.layout == "NCHWc":
            return (self.batch, channels // self.block, height, width, self.block)
        return (self.batch, height, width, channels)

    def describe(self) -> str:
        """Compact text, e.g. ``64x32x32 -> 64 k3x3 s1 p1 d1 g1 NCHW float32``."""
        return (f"{self.in_channels}x{self.height}x{self.width} -> {self.out_channels} "
                f"k{self.kernel_h}x{self.kernel_w} s{self.stride[0]} p{self.padding[0]} "
                f"d{self.dilation[0]} g{self.groups} {self.layout_name} {self.data_dtype}")

    @property
    def layout_name(self) -> str:
        """The data layout as Relax names it (``NCHW16c`` for 16-channel blocks)."""
        return f"NCHW{self.block}c" if self.layout == "NCHWc" else self.layout


def layout_axes(layout: str) -> list[str]:
    """The axes of a layout name, a block's size kept with its axis: ``NCHW16c`` is N, C, H, W, 16c."""
    return re.findall(r"\d*[A-Za-z]", layout)


def _sizes(layout: str, shape) -> dict[str, int]:
    """Each primary axis's whole size (a blocked axis's blocks times its block) by its letter."""
    sizes = {axis[-1]: int(extent) for axis, extent in zip(layout_axes(layout), shape)}
    return {axis: sizes[axis] * sizes.get(axis.lower(), 1) for axis in sizes if axis.isupper()}


def spec_from_call(call: relax.Call, weight_dtype: str) -> ConvSpec:
    """The :class:`ConvSpec` of a ``relax.nn.conv2d`` call (data layout NCHW, NHWC or NCHW[x]c)."""
    attrs = call.attrs
    layout = str(attrs.data_layout)
    blocked = re.fullmatch(r"NCHW(\d+)c", layout)
    data = _sizes(layout, call.args[0].ty.shape)
    weight = _sizes(str(attrs.kernel_layout), call.args[1].ty.shape)
    out = _sizes(str(attrs.out_layout), call.ty.shape)
    data_dtype = str(call.args[0].ty.dtype)
    out_dtype = str(attrs.out_dtype) or data_dtype
    return ConvSpec(data["N"], data["C"], data["H"], data["W"], out["C"], weight["H"], weight["W"],
                    tuple(int(s) for s in attrs.strides), tuple(int(p) for p in attrs.padding),
                    tuple(int(d) for d in attrs.dilation), int(attrs.groups), "NCHWc" if blocked else layout,
                    data_dtype, weight_dtype, out_dtype if out_dtype != "void" else str(call.ty.dtype),
                    int(blocked.group(1)) if blocked else 0)


def to_oihw(weight: np.ndarray, kernel_layout: str) -> np.ndarray:
    """The weight in OIHW from ``kernel_layout`` (e.g. ``OHWI``, ``HWIO``, or blocked: ``OIHW16o``)."""
    names = [axis[-1] for axis in layout_axes(kernel_layout)]
    order = [index for axis in "OIHW" for index in
             (names.index(axis), *([names.index(axis.lower())] if axis.lower() in names else []))]
    sizes = _sizes(kernel_layout, weight.shape)
    return np.ascontiguousarray(weight.transpose(order).reshape([sizes[axis] for axis in "OIHW"]))


def pad_input(data: te.Tensor, spec: ConvSpec) -> te.Tensor:
    """``data`` with its zero border materialised (a separate, cheap pass: keeping the bound
    checks out of the convolution's inner loop is what lets it vectorize)."""
    top, left, bottom, right = spec.padding
    if not any(spec.padding):
        return data
    h_axis, w_axis = (1, 2) if spec.layout == "NHWC" else (2, 3)
    shape = list(spec.data_shape())
    shape[h_axis] += top + bottom
    shape[w_axis] += left + right
    zero = tvm.tirx.const(0, data.dtype)

    def padded(*index):
        y, x = index[h_axis], index[w_axis]
        inside = tvm.tirx.all(y >= top, y < top + spec.height, x >= left, x < left + spec.width)
        source = list(index)
        source[h_axis], source[w_axis] = y - top, x - left
        return tvm.tirx.if_then_else(inside, data(*source), zero)

    return te.compute(shape, padded, name="pad")


def accumulate(value: tvm.tirx.PrimExpr, spec: ConvSpec) -> tvm.tirx.PrimExpr:
    """``value`` in the accumulation dtype (int8 products accumulate in int32)."""
    return value if value.dtype == spec.out_dtype else value.astype(spec.out_dtype)


def reduction_indices(spec: ConvSpec) -> np.ndarray:
    """For each position ``k`` of a flattened (channel-in-group, kh, kw) reduction — the order of
    an OIHW weight row — the (channel, kh, kw) triple, shape ``(reduction, 3)``."""
    channel, row, column = np.meshgrid(np.arange(spec.in_per_group), np.arange(spec.kernel_h),
                                       np.arange(spec.kernel_w), indexing="ij")
    return np.stack([channel.ravel(), row.ravel(), column.ravel()], axis=1)


def conv_module(specs: list[ConvSpec], weights: list[np.ndarray]) -> tvm.IRModule:
    """A Relax module with one function ``conv<i>`` per convolution (NCHW input, constant OIHW
    weight): single convolutions to test or time each algorithm on."""
    builder = relax.BlockBuilder()
    for index, (spec, weight) in enumerate(zip(specs, weights)):
        data = relax.Var("data", relax.TensorType((spec.batch, spec.in_channels, spec.height, spec.width),
                                                  spec.data_dtype))
        with builder.function(f"conv{index}", [data]):
            with builder.dataflow():
                out = builder.emit_output(relax.op.nn.conv2d(
                    data, relax.const(weight), spec.stride, spec.padding, spec.dilation, spec.groups,
                    out_dtype=spec.out_dtype))
            builder.emit_func_output(out)
    return builder.get()
