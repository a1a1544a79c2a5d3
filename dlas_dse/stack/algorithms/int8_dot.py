"""int8 convolutions on the target's dot-product instruction.

An int8 × int8 → int32 convolution is computed in a packed layout whose innermost reduction is one
dot-product instruction: ``lanes`` output channels each accumulate ``group`` consecutive input
channels per instruction. The weights are packed at build time to ``O/lanes, I/group, KH, KW,
lanes, group``, the input to ``N, I/group, H, W, group`` (its zero border included), and the
default schedule tensorizes the inner ``lanes × group`` loops with the instruction:

- x86 with AVX-512 VNNI: ``vpdpbusd`` (16 lanes × 4 bytes; unsigned × signed, so the input is
  shifted by 128 into uint8 and ``128 × Σ weights`` is subtracted per output channel);
- other x86 CPUs (AVX-512 or AVX2): ``vpmaddwd`` on int16 (16 or 8 lanes × 2), which never
  saturates, unlike the byte form ``vpmaddubsw``;
- AArch64 with ``+dotprod``: ``sdot`` (4 lanes × 4 bytes, signed).

Every form is exact integer arithmetic: the result is the int8 reference's, bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.stack.algorithms.conv import ConvSpec
from dlas_dse.stack.algorithms.lowering import Lowering
from dlas_dse.stack.algorithms.schedule import (ACCUMULATORS, default_schedule, inline_consumers, lanes,
                                              largest_divisor, vectorize_write_back)

tvm = lazy_import("tvm")
te = lazy_import("tvm.te")
s_tir = lazy_import("tvm.s_tir")
T = lazy_import("tvm.script.tirx")

SCHEDULE = "int8_dot"
INTRINSIC_KEY = "dlas.intrinsic"
WHOLE_BLOCKS_KEY = "dlas.whole_blocks"
"""Whether the output channels fill whole blocks of lanes (else the unpacking must stay a loop of
its own: written back per tile, it would store the padding lanes past the output's end)."""


@dataclass(frozen=True)
class DotProduct:
    """One dot-product instruction as a tensor intrinsic: ``lanes`` int32 accumulators, each
    adding ``group`` products of a broadcast input (``data_dtype``, shifted by ``data_offset``)
    and a weight row (``weight_dtype``)."""

    name: str
    intrinsic: str
    lanes: int
    group: int
    data_dtype: str
    weight_dtype: str
    data_offset: int = 0


def _llvm(name: str, dtype: str, *args):
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)


def _vpdpbusd(lanes: int, accumulators, data, weights):
    """x86 VNNI: four uint8 × int8 products summed into each int32 lane (the bytes as LLVM ≥ 20
    types them)."""
    return _llvm("llvm.x86.avx512.vpdpbusd.512", f"int32x{lanes}", accumulators,
                 T.reinterpret(data, dtype=f"int8x{4 * lanes}"), weights)


def _pmaddwd(name: str):
    """x86 ``pmaddwd``: two int16 × int16 products summed into each int32 lane, added on."""
    def combine(lanes: int, accumulators, data, weights):
        return accumulators + _llvm(name, f"int32x{lanes}", T.reinterpret(data, dtype=f"int16x{2 * lanes}"), weights)
    return combine


def _sdot(lanes: int, accumulators, data, weights):
    """AArch64 ``sdot``: four int8 × int8 products summed into each int32 lane."""
    return _llvm("llvm.aarch64.neon.sdot.v4i32.v16i8", f"int32x{lanes}", accumulators,
                 T.reinterpret(data, dtype=f"int8x{4 * lanes}"), weights)


def _intrinsic_function(lanes: int, group: int, data_dtype: str, weight_dtype: str, combine):
    """``C[i] += Σ_k A[k] B[i, k]`` (i < lanes, k < group, one 32-bit word of A) with the
    accumulators ``C`` in registers (local scope): as loops (the description) when ``combine`` is
    None, else as the instruction ``combine(lanes, C, A broadcast to every lane as int32, B as one
    vector)`` (the implementation)."""

    @T.prim_func(s_tir=True)
    def function(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (group,), data_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, group), weight_dtype, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            if combine is None:
                for i, k in T.grid(lanes, group):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")
            else:
                word = T.reinterpret(A.vload([0], f"{data_dtype}x{group}"), dtype="int32")
                C[T.ramp(T.int32(0), 1, lanes)] = combine(lanes, C.vload([0], f"int32x{lanes}"),
                                                          T.broadcast(word, lanes),
                                                          B.vload([0, 0], f"{weight_dtype}x{lanes * group}"))

    return function


DOT_PRODUCTS = (  # (target features, instruction, combine): the first whose features the target has
    (("avx512vnni", "avx512bw"), DotProduct("vnni", "dlas_dot_16x4_u8i8_vnni", 16, 4, "uint8", "int8", 128), _vpdpbusd),
    (("avx512bw",), DotProduct("avx512_pmaddwd", "dlas_dot_16x2_i16_pmaddwd", 16, 2, "int16", "int16"),
     _pmaddwd("llvm.x86.avx512.pmaddw.d.512")),
    (("avx2",), DotProduct("avx2_pmaddwd", "dlas_dot_8x2_i16_pmaddwd", 8, 2, "int16", "int16"),
     _pmaddwd("llvm.x86.avx2.pmadd.wd")),
    (("dotprod",), DotProduct("neon_sdot", "dlas_dot_4x4_i8_sdot", 4, 4, "int8", "int8"), _sdot),
)


@functools.cache
def register_intrinsics() -> None:
    """Register every instruction's tensor intrinsic with TVM (once, before the first lookup)."""
    for _, dot, combine in DOT_PRODUCTS:
        shape = (dot.lanes, dot.group, dot.data_dtype, dot.weight_dtype)
        s_tir.TensorIntrin.register(dot.intrinsic, _intrinsic_function(*shape, None),
                                    _intrinsic_function(*shape, combine), override=True)


def dot_product(target: tvm.target.Target | None) -> DotProduct | None:
    """The int8 dot-product instruction of an LLVM ``target`` (None: it has none, or no target)."""
    if target is None or target.kind.name != "llvm":
        return None
    register_intrinsics()
    for features, dot, _ in DOT_PRODUCTS:
        if all(tvm.target.codegen.target_has_features(feature, target) for feature in features):
            return dot
    return None


def applies(spec: ConvSpec, params: dict) -> bool:
    """Whether the packed dot-product form computes this convolution: dense int8 weights, int8
    input, int32 output, NCHW, no groups (depthwise layers keep the direct loop nest)."""
    return (spec.data_dtype == spec.weight_dtype == "int8" and spec.out_dtype == "int32" and spec.groups == 1
            and spec.layout == "NCHW" and params.get("format", "dense") == "dense")


def _blocks(extent: int, block: int) -> int:
    return -(-extent // block)


def pack_weight(weight: np.ndarray, dot: DotProduct) -> tuple[np.ndarray, np.ndarray]:
    """The OIHW int8 ``weight`` as ``O/lanes, I/group, KH, KW, lanes, group`` (zero-filled to whole
    blocks) in the instruction's weight dtype, and the int32 correction per output channel for
    the input's shift (``data_offset × Σ weights``)."""
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    lanes, group = dot.lanes, dot.group
    padded = np.zeros((_blocks(out_channels, lanes) * lanes, _blocks(in_channels, group) * group,
                       kernel_h, kernel_w), dtype=weight.dtype)
    padded[:out_channels, :in_channels] = weight
    packed = padded.reshape(-1, lanes, padded.shape[1] // group, group, kernel_h, kernel_w).transpose(0, 2, 4, 5, 1, 3)
    correction = dot.data_offset * weight.astype(np.int64).sum(axis=(1, 2, 3))
    return np.ascontiguousarray(packed.astype(dot.weight_dtype)), correction.astype(np.int32)


def clamp(index, extent: int):
    """``index`` held within ``0 .. extent - 1`` (a read that stays in bounds in both branches of a
    vectorized select)."""
    return tvm.tirx.max(tvm.tirx.min(index, extent - 1), 0)


def dot_compute(spec: ConvSpec, dot: DotProduct):
    """TE compute of the convolution from packed weights and the per-channel correction."""
    lanes, group = dot.lanes, dot.group
    top, left, _, _ = spec.padding
    stride_h, stride_w = spec.stride
    dilation_h, dilation_w = spec.dilation
    padded_h = spec.height + spec.padding[0] + spec.padding[2]
    padded_w = spec.width + spec.padding[1] + spec.padding[3]
    in_blocks = _blocks(spec.in_channels, group)
    zero = tvm.tirx.const(dot.data_offset, dot.data_dtype)

    def compute(data: te.Tensor, weight: te.Tensor, correction: te.Tensor) -> te.Tensor:
        def packed_input(n, block, y, x, lane):
            channel = block * group + lane
            inside = tvm.tirx.all(channel < spec.in_channels, y >= top, y < top + spec.height,
                                  x >= left, x < left + spec.width)
            value = data[n, clamp(channel, spec.in_channels), clamp(y - top, spec.height),
                         clamp(x - left, spec.width)]  # in bounds even where a vector reads both branches
            if dot.data_offset:
                value = value.astype("int32") + dot.data_offset
            return tvm.tirx.if_then_else(inside, value.astype(dot.data_dtype), zero)

        packed = te.compute((spec.batch, in_blocks, padded_h, padded_w, group), packed_input, name="pack_input")
        block = te.reduce_axis((0, in_blocks), "in_block")
        row = te.reduce_axis((0, spec.kernel_h), "kh")
        column = te.reduce_axis((0, spec.kernel_w), "kw")
        lane = te.reduce_axis((0, group), "in_lane")

        def product(n, out_block, y, x, out_lane):
            pixel = packed[n, block, y * stride_h + row * dilation_h, x * stride_w + column * dilation_w, lane]
            return te.sum(pixel.astype("int32") * weight[out_block, block, row, column, out_lane, lane].astype("int32"),
                          axis=[block, row, column, lane])

        products = te.compute((spec.batch, _blocks(spec.out_channels, lanes), spec.out_height, spec.out_width, lanes),
                              product, name="conv", attrs={"dlas.schedule": SCHEDULE, INTRINSIC_KEY: dot.intrinsic,
                                                           WHOLE_BLOCKS_KEY: spec.out_channels % lanes == 0})
        return te.compute(spec.out_shape(), lambda n, o, y, x: products[n, o // lanes, y, x, o % lanes]
                          - correction[o], name="unpack")

    return compute


def dot_lowering(spec: ConvSpec, weight: np.ndarray, dot: DotProduct) -> Lowering:
    """The convolution (OIHW int8 ``weight``) on ``dot``'s instruction."""
    packed, correction = pack_weight(weight, dot)
    return Lowering(f"direct_{dot.name}", dot_compute(spec, dot), [packed, correction])


def tile_on_instruction(sch, block, outer: list, tiles: list, reduction: list, lane, inline: bool):
    """What the dot-product schedules share, once their loops are split: the register ``tiles``
    under the ``reduction`` loops but the last, which with ``lane`` is one instruction; the
    ``outer`` loops fused and run in parallel; the accumulators written back per tile (the
    epilogue folded in where ``inline``). Returns the write-back block."""
    register_intrinsics()  # in a process that schedules without having looked the instruction up
    sch.reorder(*outer, *reduction[:-1], *tiles, lane, reduction[-1])
    write_back = sch.cache_write(block, 0, "local")
    if inline:
        inline_consumers(sch, write_back)
    fused = sch.fuse(*outer)
    sch.parallel(fused)
    sch.reverse_compute_at(write_back, fused)
    init = sch.decompose_reduction(block, reduction[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(lane, str(sch.get(block).annotations[INTRINSIC_KEY]))
    for tile in tiles:
        sch.unroll(tile)
    return write_back


@default_schedule(SCHEDULE)
def schedule_int8_dot(sch, block, vector_bits: int) -> None:
    """A register tile of output columns (× output-channel blocks where a row is short), each
    accumulator one vector of ``lanes`` channels, the inner ``lanes × group`` loops one instruction;
    the unpacking (and the fused epilogue) written back per tile."""
    whole = bool(sch.get(block).annotations[WHOLE_BLOCKS_KEY])
    batch, out_block, row, column, lane, *reduction = sch.get_loops(block)
    columns = largest_divisor(int(sch.get(column).extent), ACCUMULATORS)
    blocks = largest_divisor(int(sch.get(out_block).extent), ACCUMULATORS // columns)
    out_block, block_tile = sch.split(out_block, [None, blocks])
    column, column_tile = sch.split(column, [None, columns])
    write_back = tile_on_instruction(sch, block, [batch, out_block, row, column], [block_tile, column_tile],
                                     reduction, lane, whole)
    own = sch.get_loops(write_back)[1:]
    if len(own) >= 2 and whole:  # NCHW output: store along the columns
        sch.reorder(own[-1], own[-2])
    vectorize_write_back(sch, write_back, lanes(vector_bits, "int32"))
