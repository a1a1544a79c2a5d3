"""``winograd``: F(m×m, 3×3) minimal filtering (Lavin & Gray) for 3×3 stride-1 dense float
convolutions, in NCHW or NHWC.

Per m×m output tile: input transform V = Bᵀ d B, one batched matrix product per transform point
M[ξ,ν] = U[ξ,ν] · V[ξ,ν] over input channels (U = G g Gᵀ precomputed from the weight), output
transform Aᵀ M A. The transforms work on NHWC tiles (an NCHW input is transposed first), so
that channels are their vector. Default schedules: the transforms unrolled over the transform
points around a vector of channels, per tile; the product register-tiled like ``direct`` (tiles
in registers, output channels in a vector, U packed to stream contiguously)."""

from __future__ import annotations

import dataclasses

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import ALGORITHMS, Param
from dlas_dse.stack.algorithms.conv import ConvSpec, accumulate, pad_input
from dlas_dse.stack.algorithms.lowering import Lowering, NotApplicable
from dlas_dse.stack.algorithms.schedule import (default_schedule, inline_consumers, lanes, largest_divisor,
                                                   parallelize, tile_reduction)

tvm = lazy_import("tvm")
s_tir = lazy_import("tvm.s_tir")
te = lazy_import("tvm.te")

POINTS = (0.0, 1.0, -1.0, 2.0, -2.0)
"""Finite interpolation points, in order of use (infinity is always the last point)."""
PACK_BITS = 512
"""U is packed by blocks of output channels this many bits wide (the widest CPU vector), so
that each vector of the product's accumulators streams its U block contiguously."""


def transform_matrices(m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, G)`` of F(m, r), shapes (α, m), (α, α), (α, r) with α = m + r − 1, such that the
    correlation ``y[i] = Σ_k g[k] d[i+k]`` is ``Aᵀ [(G g) ⊙ (Bᵀ d)]``.

    Cook–Toom: the linear convolution s = h * g (α coefficients) is recovered from its values
    at α − 1 points p and its leading coefficient (the point at infinity); correlation is that
    algorithm transposed. Evaluating h and g gives A and G; recovering s from the values,
    ``s(x) = s(∞) Π_j (x − p_j) + Σ_ξ s(p_ξ) Π_{j≠ξ} (x − p_j) / D_ξ`` with
    D_ξ = Π_{j≠ξ} (p_ξ − p_j), gives Bᵀ's rows, whose 1/D_ξ is moved into G's rows."""
    alpha = m + r - 1
    if alpha - 1 > len(POINTS):
        raise ValueError(f"F({m}, {r}) needs {alpha - 1} finite interpolation points, {len(POINTS)} are defined")
    points = np.array(POINTS[:alpha - 1])

    def evaluation(n: int) -> np.ndarray:
        infinity = np.eye(n)[-1:]
        return np.vstack([points[:, None] ** np.arange(n), infinity])

    rows, scale = [], []
    for xi, point in enumerate(points):
        others = np.delete(points, xi)
        rows.append(np.polynomial.polynomial.polyfromroots(others))
        scale.append(np.prod(point - others))
    rows.append(np.polynomial.polynomial.polyfromroots(points))
    scale.append(1.0)
    b_t = np.array([np.pad(row, (0, alpha - len(row))) for row in rows]) * np.sign(scale)[:, None]
    g = evaluation(r) / np.abs(scale)[:, None]
    return evaluation(m), b_t.T, g


def combination(matrix: np.ndarray, row: tvm.tirx.PrimExpr, term, dtype: str) -> tvm.tirx.PrimExpr:
    """``Σ_j matrix[row, j] · term(j)`` for a loop variable ``row``: a choice between the rows,
    each a sum of its nonzero terms only (resolved at compile time once ``row`` is unrolled)."""
    expr = None
    for index in reversed(range(matrix.shape[0])):
        value = None
        for j, coefficient in enumerate(matrix[index]):
            if coefficient == 0:
                continue
            if value is None:
                value = term(j) if coefficient == 1 else term(j) * tvm.tirx.const(coefficient, dtype)
                continue
            part = term(j) if abs(coefficient) == 1 else term(j) * tvm.tirx.const(abs(coefficient), dtype)
            value = value + part if coefficient > 0 else value - part
        expr = value if expr is None else tvm.tirx.if_then_else(row == index, value, expr)
    return expr


def winograd_compute(spec: ConvSpec, m: int, pack: int):
    """TE compute of the convolution from ``U`` laid out (α, α, out channels / ``pack``,
    in channels, ``pack``)."""
    a, b, _ = transform_matrices(m)
    a_t, b_t = a.T, b.T
    alpha = m + 2
    rows, columns = -(-spec.out_height // m), -(-spec.out_width // m)
    tiles = spec.batch * rows * columns
    top, left, bottom, right = spec.padding
    whole = dataclasses.replace(spec, padding=(top, left, bottom + rows * m - spec.out_height,
                                               right + columns * m - spec.out_width))
    dtype = spec.out_dtype

    def tile_origin(p):
        return p // (rows * columns), p % (rows * columns) // columns * m, p % columns * m

    def compute(data: te.Tensor, u: te.Tensor) -> te.Tensor:
        if spec.layout == "NCHW":
            data = te.compute((spec.batch, spec.height, spec.width, spec.in_channels),
                              lambda n, y, x, c: data[n, c, y, x], name="to_nhwc",
                              attrs={"dlas.schedule": "winograd_to_nhwc"})
        padded = pad_input(data, dataclasses.replace(whole, layout="NHWC"))

        def pixel(p, c, y, x):
            n, y0, x0 = tile_origin(p)
            return accumulate(padded[n, y0 + y, x0 + x, c], spec)

        rows_mixed = te.compute(
            (alpha, alpha, tiles, spec.in_channels),
            lambda xi, x, p, c: combination(b_t, xi, lambda y: pixel(p, c, y, x), dtype), name="input_rows")
        v = te.compute(
            (alpha, alpha, tiles, spec.in_channels),
            lambda xi, nu, p, c: combination(b_t, nu, lambda x: rows_mixed[xi, x, p, c], dtype),
            name="input_transform", attrs={"dlas.schedule": "winograd_input"})
        channel = te.reduce_axis((0, spec.in_channels), "channel")
        product = te.compute(
            (alpha, alpha, tiles, spec.out_channels),
            lambda xi, nu, p, k: te.sum(
                v[xi, nu, p, channel] * accumulate(u[xi, nu, k // pack, channel, k % pack], spec), axis=channel),
            name="product", attrs={"dlas.schedule": "winograd_product"})
        columns_mixed = te.compute(
            (m, alpha, tiles, spec.out_channels),
            lambda i, nu, p, k: combination(a_t, i, lambda xi: product[xi, nu, p, k], dtype), name="output_rows")
        tiled = te.compute(
            (spec.batch, rows, m, columns, m, spec.out_channels),
            lambda n, ty, i, tx, j, k: combination(
                a_t, j, lambda nu: columns_mixed[i, nu, (n * rows + ty) * columns + tx, k], dtype),
            name="output_transform", attrs={"dlas.schedule": "winograd_output"})

        def unpack(n, y, x, k):
            return tiled[n, y // m, y % m, x // m, x % m, k]

        if spec.layout == "NCHW":
            return te.compute(spec.out_shape(), lambda n, k, y, x: unpack(n, y, x, k), name="conv",
                              attrs={"dlas.schedule": "winograd_unpack"})
        return te.compute(spec.out_shape(), unpack, name="conv", attrs={"dlas.schedule": "winograd_unpack"})

    return compute


@ALGORITHMS.register("winograd", tile=Param(int, default=4, choices=(2, 4), help="output tile m of F(m×m, 3×3)"))
def winograd(spec: ConvSpec, weight: np.ndarray, params: dict) -> Lowering:
    """F(m×m, 3×3) Winograd for 3×3 stride-1 dense float convolutions."""
    if params.get("format") == "sparse":
        raise NotApplicable("winograd has no sparse variant")
    if ((spec.kernel_h, spec.kernel_w) != (3, 3) or spec.stride != (1, 1) or spec.dilation != (1, 1)
            or spec.groups != 1 or not str(spec.data_dtype).startswith("float")):
        raise NotApplicable("winograd needs a 3x3 stride-1 dense float convolution")
    m = params.get("tile", 4)
    _, _, g = transform_matrices(m)
    pack = largest_divisor(spec.out_channels, lanes(PACK_BITS, spec.out_dtype))
    u = np.einsum("xa,kcab,yb->xyck", g, weight.astype(np.float64), g)
    u = u.reshape(m + 2, m + 2, spec.in_channels, spec.out_channels // pack, pack).transpose(0, 1, 3, 2, 4)
    return Lowering("winograd", winograd_compute(spec, m, pack), [np.ascontiguousarray(u, str(spec.data_dtype))])


@default_schedule("winograd_product")
def schedule_product(sch, block, vector_bits: int) -> None:
    """Tiles in registers, output channels in a vector, per transform point."""
    tile_reduction(sch, block, vector_bits, vector_axis=3, register_axis=2)


def schedule_transform(sch, block, vector_bits: int, points: tuple[int, ...]) -> None:
    """Per (tile, vector of channels), in parallel: the half-transform producing ``block``, then
    ``block``, both unrolled over their transform-point loops (``points``) around the vector."""
    loops = sch.get_loops(block)
    extent = int(sch.get(loops[-1]).extent)
    vector = largest_divisor(extent, lanes(vector_bits, sch.get(block).writes[0].source.dtype))
    channel_outer, channel_inner = sch.split(loops[-1], [None, vector])
    tile = [loop for axis, loop in enumerate(loops[:-1]) if axis not in points]
    sch.reorder(*tile, channel_outer, *(loops[axis] for axis in points), channel_inner)
    fused = sch.fuse(*tile, channel_outer)
    sch.parallel(fused)
    producer = sch.get_producers(block)[0]
    sch.compute_at(producer, fused)
    for stage in (producer, block):
        inner = sch.get_loops(stage)[1:]
        if vector > 1:
            sch.vectorize(inner.pop())
        for loop in inner:
            sch.unroll(loop)


@default_schedule("winograd_to_nhwc")
def schedule_to_nhwc(sch, block, vector_bits: int) -> None:
    """Transpose NCHW → NHWC by blocks of channels × columns: contiguous vector loads along the
    columns (a vector gather across channels is several times slower)."""
    n, y, x, c = sch.get_loops(block)
    vector = lanes(vector_bits, sch.get(block).writes[0].source.dtype)
    x_outer, x_inner = sch.split(x, [None, largest_divisor(int(sch.get(x).extent), vector)])
    c_outer, c_inner = sch.split(c, [None, largest_divisor(int(sch.get(c).extent), vector)])
    sch.reorder(n, y, x_outer, c_outer, c_inner, x_inner)
    sch.parallel(sch.fuse(n, y))
    sch.unroll(c_inner)
    sch.vectorize(x_inner)


@default_schedule("winograd_input")
def schedule_input(sch, block, vector_bits: int) -> None:
    """Input transform V[ξ, ν, tile, channel]."""
    schedule_transform(sch, block, vector_bits, points=(0, 1))


@default_schedule("winograd_output")
def schedule_output(sch, block, vector_bits: int) -> None:
    """Output transform [n, tile row, i, tile column, j, channel]."""
    schedule_transform(sch, block, vector_bits, points=(2, 4))


@default_schedule("winograd_unpack")
def schedule_unpack(sch, block, vector_bits: int) -> None:
    """Folded into the output transform where the tiles cover the output exactly, else a crop
    of its own; either way with the fused epilogue (bias, activation, residual) folded in."""
    transform = sch.get_producers(block)[0]
    try:
        sch.reverse_compute_inline(block)
    except s_tir.schedule.ScheduleError:
        inline_consumers(sch, block)
        parallelize(sch, block, vector_bits)
        return
    inline_consumers(sch, transform)
