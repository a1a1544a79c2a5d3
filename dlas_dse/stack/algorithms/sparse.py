"""Sparse (CSR) variants of direct, gemm and spatial_pack for weight-pruned models.

The OIHW weight is stored as CSR of the matrix [out_channels, in_channels × kh × kw] (row =
output channel): values, column indices and row pointers; zeros are neither stored nor
multiplied. Every variant computes channel-major, one output row per output channel; in NHWC
a final transposing compute writes the NHWC output (sparse_direct also transposes the input,
gemm and spatial_pack gather their patches from it). Grouped convolutions and dtypes other than
float32 are not applicable.

Default schedule: output channels (with spatial tiles) in parallel; under each row's nonzero
loop a register tile of the contiguous spatial axis (a few vectors), accumulated locally.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.stack.algorithms.conv import ConvSpec, pad_input, reduction_indices
from dlas_dse.stack.algorithms.lowering import Lowering, NotApplicable
from dlas_dse.stack.algorithms.schedule import (ACCUMULATORS, default_schedule, inline_consumers,
                                                largest_divisor, lanes, tile_reduction, vectorize_write_back)

tvm = lazy_import("tvm")
te = lazy_import("tvm.te")

PACK_TILE = 128
"""Largest spatial tile of ``sparse_spatial_pack`` (the register tile of its product)."""


def csr(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, column indices and row pointers of ``weight`` flattened to [out_channels, -1]."""
    matrix = weight.reshape(weight.shape[0], -1)
    rows, columns = np.nonzero(matrix)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=matrix.shape[0]))])
    return matrix[rows, columns].astype(np.float32), columns.astype(np.int32), indptr.astype(np.int32)


def row_sum(values: te.Tensor, indptr: te.Tensor, width: int, row, term) -> te.Tensor:
    """Σ over the nonzeros ``j`` of ``row`` of ``values[j] · term(j)``. The loop has the longest
    row's length, ``width``, and branches over the iterations past the row's end (no load, no
    product): TE nests a reduction whose extent depends on the row in a block under the spatial
    loops, and a loop with that extent fails the affine-binding check of ``reorder``, so neither
    lets the nonzero loop move outside the register tile."""
    start = indptr[row]
    nonzero = te.reduce_axis((0, width), "nonzero")
    product = values[start + nonzero] * term(start + nonzero)
    inside = nonzero < indptr[row + 1] - start
    return te.sum(tvm.tirx.if_then_else(inside, product, tvm.tirx.const(0, "float32")), axis=nonzero)


def to_layout(spec: ConvSpec, read) -> te.Tensor:
    """The output in the spec's layout from ``read(n, o, y, x)`` of a channel-major result."""
    if spec.layout == "NCHW":
        return te.compute(spec.out_shape(), read, name="unpack")
    return te.compute(spec.out_shape(), lambda n, y, x, o: read(n, o, y, x), name="unpack")


def patch_matrix(spec: ConvSpec, data: te.Tensor):
    """``patch(n, k, p)``: element (k, p) of the im2col matrix [in_channels × kh × kw, OH × OW]."""
    padded = pad_input(data, spec)
    taps = spec.kernel_h * spec.kernel_w

    def patch(n, k, p):
        y = p // spec.out_width * spec.stride[0] + k // spec.kernel_w % spec.kernel_h * spec.dilation[0]
        x = p % spec.out_width * spec.stride[1] + k % spec.kernel_w * spec.dilation[1]
        return padded[n, k // taps, y, x] if spec.layout == "NCHW" else padded[n, y, x, k // taps]

    return patch


def sparse_direct(spec: ConvSpec, width: int):
    """out[n, o, y, x] = Σ_j values[j] · padded[n, c_j, y·s + kh_j·d, x·s + kw_j·d] over row o,
    from the nonzeros' decoded (channel, kh, kw) ``taps``; an NHWC input is first transposed."""
    shape = (spec.batch, spec.out_channels, spec.out_height, spec.out_width)

    def compute(data: te.Tensor, values: te.Tensor, taps: te.Tensor, indptr: te.Tensor) -> te.Tensor:
        if spec.layout == "NHWC":
            data = te.compute((spec.batch, spec.in_channels, spec.height, spec.width),
                              lambda n, c, y, x: data[n, y, x, c], name="transpose")
        padded = pad_input(data, dataclasses.replace(spec, layout="NCHW"))

        def output(n, o, y, x):
            return row_sum(values, indptr, width, o, lambda j: padded[
                n, taps[j, 0], y * spec.stride[0] + taps[j, 1] * spec.dilation[0],
                x * spec.stride[1] + taps[j, 2] * spec.dilation[1]])

        conv = te.compute(shape, output, name="conv", attrs={"dlas.schedule": "sparse_direct"})
        return conv if spec.layout == "NCHW" else to_layout(spec, lambda n, o, y, x: conv[n, o, y, x])

    return compute


def sparse_gemm(spec: ConvSpec, width: int):
    """The im2col matrix col[n, K, P] materialised, out[n, o, p] = Σ_j values[j] · col[n, column_j, p]."""
    positions = spec.out_height * spec.out_width

    def compute(data: te.Tensor, values: te.Tensor, columns: te.Tensor, indptr: te.Tensor) -> te.Tensor:
        col = te.compute((spec.batch, spec.reduction, positions), patch_matrix(spec, data), name="im2col")
        conv = te.compute((spec.batch, spec.out_channels, positions),
                          lambda n, o, p: row_sum(values, indptr, width, o, lambda j: col[n, columns[j], p]),
                          name="conv", attrs={"dlas.schedule": "sparse_gemm"})
        return to_layout(spec, lambda n, o, y, x: conv[n, o, y * spec.out_width + x])

    return compute


def sparse_spatial_pack(spec: ConvSpec, width: int):
    """The im2col matrix packed in spatial tiles [n, P / tile, K, tile], the product per tile
    [n, P / tile, o, tile], unpacked."""
    positions = spec.out_height * spec.out_width
    tile = largest_divisor(positions, PACK_TILE)

    def compute(data: te.Tensor, values: te.Tensor, columns: te.Tensor, indptr: te.Tensor) -> te.Tensor:
        patch = patch_matrix(spec, data)
        packed = te.compute((spec.batch, positions // tile, spec.reduction, tile),
                            lambda n, b, k, t: patch(n, k, b * tile + t), name="pack")
        conv = te.compute((spec.batch, positions // tile, spec.out_channels, tile),
                          lambda n, b, o, t: row_sum(values, indptr, width, o,
                                                     lambda j: packed[n, b, columns[j], t]),
                          name="conv", attrs={"dlas.schedule": "sparse_spatial_pack"})

        def read(n, o, y, x):
            p = y * spec.out_width + x
            return conv[n, p // tile, o, p % tile]

        return to_layout(spec, read)

    return compute


def sparse_lowering(algorithm: str, spec: ConvSpec, weight: np.ndarray) -> Lowering:
    """CSR lowering of ``algorithm`` (direct, gemm or spatial_pack) for one convolution."""
    if spec.groups > 1:
        raise NotApplicable("sparse kernels do not support grouped convolutions")
    if {str(spec.data_dtype), str(spec.weight_dtype), str(spec.out_dtype)} != {"float32"}:
        raise NotApplicable("sparse kernels are float32 only")
    values, columns, indptr = csr(weight)
    if not len(values):
        raise NotApplicable("every weight is zero")
    width = int(np.diff(indptr).max())
    if algorithm == "direct":
        taps = reduction_indices(spec)[columns].astype(np.int32)
        return Lowering("sparse_direct", sparse_direct(spec, width), [values, taps, indptr])
    compute = {"gemm": sparse_gemm, "spatial_pack": sparse_spatial_pack}[algorithm]
    return Lowering(f"sparse_{algorithm}", compute(spec, width), [values, columns, indptr])


@default_schedule("sparse_direct")
def schedule_sparse_direct(sch, block, vector_bits: int) -> None:
    """Image rows in registers, output columns in a vector, under the nonzero loop."""
    tile_reduction(sch, block, vector_bits, vector_axis=3, register_axis=2)


@default_schedule("sparse_gemm")
@default_schedule("sparse_spatial_pack")
def schedule_sparse_rows(sch, block, vector_bits: int) -> None:
    """Rows (and tiles of the last spatial axis) in parallel; under the row's nonzero loop a
    register tile of the last spatial axis, a few vectors, accumulated locally."""
    *outer, last, nonzero = sch.get_loops(block)
    extent = int(sch.get(last).extent)
    vector = largest_divisor(extent, lanes(vector_bits, "float32"))
    rest, register, lane = sch.split(last, [None, largest_divisor(extent // vector, ACCUMULATORS), vector])
    sch.reorder(rest, nonzero, register, lane)
    write_back = sch.cache_write(block, 0, "local")
    inline_consumers(sch, write_back)
    fused = sch.fuse(*outer, rest)
    sch.parallel(fused)
    sch.reverse_compute_at(write_back, fused)
    sch.unroll(register)
    sch.vectorize(lane)
    vectorize_write_back(sch, write_back, vector)
    sch.decompose_reduction(block, nonzero)
