"""Default schedules: what "untuned" means for this project.

TVM 0.27 has no default CPU schedule for convolutions, so each algorithm tags its main compute
block with ``{"dlas.schedule": name}`` and registers, under that name, a schedule written for it
(:func:`default_schedule`). :func:`build_pipeline` is TVM's CPU pipeline with one extra pass
after operator fusion (and after MetaSchedule's tuned schedules, when tuning): every PrimFunc not
yet scheduled gets its algorithm's schedule, or a generic one (parallel outer loops) when it holds
no tagged block (pooling, elementwise, dense layers).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import Registry

tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")
s_tir = lazy_import("tvm.s_tir")
cpu_generic = lazy_import("tvm.relax.backend.cpu_generic.pipeline")
cuda = lazy_import("tvm.relax.backend.cuda.pipeline")

SCHEDULE_KEY = "dlas.schedule"
IS_SCHEDULED = "tirx.is_scheduled"
"""PrimFunc attribute marking a function as scheduled (by MetaSchedule or by this module)."""
ACCUMULATORS = 8
"""Vector registers a register tile may hold as accumulators (x86 and AArch64 have ≥ 16)."""
RUNTIME_ERRORS = RuntimeError
"""What TVM raises when a schedule primitive does not apply (``ScheduleError`` and internal checks)."""
PARALLEL_GRAIN = 64
"""Outer iterations a parallel loop should have to keep every core busy."""


Scheduler = Callable[["s_tir.Schedule", "s_tir.schedule.SBlockRV", int], None]
SCHEDULES = Registry("default schedule", "tag")
"""Each algorithm's default schedule by the tag of its main compute block."""


def default_schedule(name: str) -> Callable[[Scheduler], Scheduler]:
    """Register ``function(schedule, block, vector_bits)`` as the default schedule of blocks
    tagged ``{"dlas.schedule": name}``."""

    return SCHEDULES.register(name)


def largest_divisor(extent: int, limit: int) -> int:
    """The largest divisor of ``extent`` that is at most ``limit`` (tiles never need a tail)."""
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def lanes(vector_bits: int, dtype: str) -> int:
    """Elements of ``dtype`` in one vector register."""
    return max(1, vector_bits // tvm.DataType(dtype).bits)


def _extents(sch: s_tir.Schedule, loops: list) -> list[int]:
    return [int(sch.get(loop).extent) for loop in loops]


def _spatial_count(sch: s_tir.Schedule, block) -> int:
    return sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == tvm.tirx.IterVar.DataPar)


def inline_consumers(sch: s_tir.Schedule, block) -> None:
    """Fold the elementwise consumers of ``block`` (bias, activation, residual add, reshape)
    into it, as far as they go."""
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except RUNTIME_ERRORS:  # ScheduleError, or an internal check failing on an unusual epilogue
            return


def parallelize(sch: s_tir.Schedule, block, vector_bits: int | None = None) -> None:
    """Run ``block``'s leading spatial loops in parallel (fused until there are enough iterations
    to share) and, for a spatial block when ``vector_bits`` is given, vectorize its innermost loop."""
    loops = sch.get_loops(block)
    spatial = min(_spatial_count(sch, block), len(loops))
    if spatial == 0:
        return
    extents = _extents(sch, loops)
    vectorize = bool(vector_bits) and spatial == len(loops) and spatial > 1
    limit = spatial - 1 if vectorize else spatial
    outer = 1
    while outer < limit and math.prod(extents[:outer]) < PARALLEL_GRAIN:
        outer += 1
    if vectorize:
        factor = largest_divisor(extents[-1], lanes(vector_bits, sch.get(block).writes[0].source.dtype))
        if factor > 1:
            sch.vectorize(sch.split(loops[-1], [None, factor])[1])
    if math.prod(extents[:outer]) > 1:
        sch.parallel(sch.fuse(*loops[:outer]) if outer > 1 else loops[0])


def vectorize_write_back(sch: s_tir.Schedule, write_back, lanes_limit: int) -> None:
    """Vectorize the innermost loop of a write-back block computed at its tile's parallel loop
    (not that loop itself: its own loops may all have vanished when the tile is a single element)."""
    own = sch.get_loops(write_back)[1:]
    if own:
        factor = largest_divisor(int(sch.get(own[-1]).extent), lanes_limit)
        if factor > 1:
            sch.vectorize(sch.split(own[-1], [None, factor])[1])


def tile_reduction(sch: s_tir.Schedule, block, vector_bits: int, vector_axis: int,
                   register_axis: int | tuple[int, ...] | None, register_tile: int = ACCUMULATORS) -> None:
    """The register-tiled schedule every dense algorithm shares: split the spatial loop
    ``vector_axis`` by the vector width and ``register_axis`` (or several, outermost first) into a
    tile of at most ``register_tile`` accumulators (the innermost axis filled first), move them under
    the reduction loops, accumulate into a local buffer written back (with the fused epilogue) per
    tile, run the outer tiles in parallel."""
    loops = sch.get_loops(block)
    spatial = _spatial_count(sch, block)
    extents = _extents(sch, loops)
    outer, inner = list(loops[:spatial]), []
    vector = lanes(vector_bits, sch.get(block).writes[0].source.dtype)
    register_axes = (register_axis,) if isinstance(register_axis, int) else tuple(register_axis or ())
    factors, budget = {vector_axis: largest_divisor(extents[vector_axis], vector)}, register_tile
    for axis in reversed(register_axes):
        factors[axis] = largest_divisor(extents[axis], budget)
        budget //= factors[axis]
    for axis in (*register_axes, vector_axis):
        outer[axis], part = sch.split(loops[axis], [None, factors[axis]])
        inner.append(part)
    sch.reorder(*outer, *loops[spatial:], *inner)
    write_back = sch.cache_write(block, 0, "local")
    inline_consumers(sch, write_back)
    fused = sch.fuse(*outer)
    sch.parallel(fused)
    sch.reverse_compute_at(write_back, fused)
    for part in inner[:-1]:
        sch.unroll(part)
    sch.vectorize(inner[-1])
    vectorize_write_back(sch, write_back, vector)
    if len(loops) > spatial:
        sch.decompose_reduction(block, loops[spatial])


def _is_parallel(sch: s_tir.Schedule, block) -> bool:
    loops = sch.get_loops(block)
    return bool(loops) and sch.get(loops[0]).kind == tvm.tirx.ForKind.PARALLEL


def schedule_with_defaults(func: tvm.tirx.PrimFunc | tvm.IRModule, vector_bits: int) -> s_tir.Schedule:
    """The schedule (with its trace) giving ``func`` its algorithms' default schedules for the
    tagged blocks and the generic one for every other block (packing, padding, pooling,
    elementwise, dense layers)."""
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    tagged = [(block, str(sch.get(block).annotations[SCHEDULE_KEY])) for block in sch.get_child_blocks(root)
              if SCHEDULE_KEY in sch.get(block).annotations]
    try:
        for block, tag in tagged:
            SCHEDULES.get(tag).function(sch, block, vector_bits)
    except RUNTIME_ERRORS:  # never a failed build: the generic schedule below is always valid
        sch = s_tir.Schedule(func)
        root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        if not _is_parallel(sch, block):
            try:
                parallelize(sch, block, vector_bits)
            except s_tir.schedule.ScheduleError:
                continue
    return sch


def schedule_function(func: tvm.tirx.PrimFunc, vector_bits: int) -> tvm.tirx.PrimFunc:
    """``func`` with its default schedule (see :func:`schedule_with_defaults`), marked scheduled."""
    return schedule_with_defaults(func, vector_bits).mod["main"].with_attr(IS_SCHEDULED, True)


def apply_default_schedules(vector_bits: int, scheduled: list[str] | None = None) -> tvm.transform.Pass:
    """A module pass giving every unscheduled PrimFunc its default schedule (their names are
    appended to ``scheduled`` when given)."""

    @tvm.transform.module_pass(opt_level=0, name="DlasDefaultSchedules")
    def apply(mod: tvm.IRModule, _context) -> tvm.IRModule:
        updated = tvm.IRModule(mod.functions, attrs=mod.attrs)
        for global_var, func in mod.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc) and not func.attrs.get(IS_SCHEDULED, False):
                updated[global_var] = schedule_function(func.with_attr("global_symbol", global_var.name_hint),
                                                        vector_bits)
                if scheduled is not None:
                    scheduled.append(global_var.name_hint)
        return updated

    return apply


X86_VECTOR_BITS = (("avx512f", 512), ("avx", 256), ("sse2", 128))


def vector_bits(target: tvm.target.Target) -> int:
    """The widest vector register of an LLVM target's CPU. TVM's ``llvm_get_vector_width`` says
    512 for every x86 CPU (AVX2-only ones too), so x86 widths come from the CPU's features."""
    for feature, bits in X86_VECTOR_BITS:
        if tvm.target.codegen.target_has_features(feature, target):
            return bits
    return tvm.target.codegen.llvm_get_vector_width(target)


def _is_gpu(target: tvm.target.Target) -> bool:
    return target.kind.name == "cuda"


def _fusion_passes(target: tvm.target.Target) -> list:
    """Library dispatch, legalization of operators to PrimFuncs, and operator fusion."""
    if not _is_gpu(target):
        return cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
    return cuda.library_dispatch_passes(target) + [
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
        relax.transform.FuseOps(), relax.transform.FuseTIR()]


def _lowering_passes(target: tvm.target.Target) -> list:
    backend = cuda if _is_gpu(target) else cpu_generic
    return backend.dataflow_lower_passes(target) + backend.finalize_passes(target)


def _declining_on_failure(rule):
    """``rule`` as a dlight rule that declines (returns None) a function it fails on, so that the
    next rule schedules it: dlight's Matmul asserts on winograd's batched product with the inverse
    transform fused after it, where Reduction and Fallback schedule it."""
    from tvm.s_tir import dlight

    def apply(func, target, tunable):
        try:
            return rule.apply(func, target, tunable)
        except (AssertionError, RUNTIME_ERRORS):
            return None

    return dlight.ScheduleRule.from_callable(type(rule).__name__)(apply)


def _default_schedules(target: tvm.target.Target, scheduled: list[str] | None) -> tvm.transform.Pass:
    """The "untuned" schedule of every function not scheduled yet: the project's own on CPUs,
    dlight's default GPU rules on CUDA (the first that applies; Fallback schedules any function)."""
    if not _is_gpu(target):
        return apply_default_schedules(vector_bits(target), scheduled)
    from tvm.s_tir import dlight

    rules = (dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(), dlight.gpu.GeneralReduction())
    return dlight.ApplyDefaultSchedule(*map(_declining_on_failure, rules), dlight.gpu.Fallback())


def fuse_operators(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """``mod`` as :func:`build_pipeline` has it when schedules are applied: operators legalized
    to PrimFuncs and fused (the functions MetaSchedule tunes)."""
    with target:
        return tvm.transform.Sequential(_fusion_passes(target))(mod)


def build_pipeline(target: tvm.target.Target, database=None, scheduled: list[str] | None = None) -> tvm.transform.Pass:
    """TVM's build pipeline; after operator fusion, the functions a MetaSchedule ``database`` has
    records for get their tuned schedule and every other one the default schedule (all of them
    without a database: the "untuned" build)."""

    @tvm.transform.module_pass(opt_level=0, name="DlasBuildPipeline")
    def pipeline(mod: tvm.IRModule, _context) -> tvm.IRModule:
        with target, (database if database is not None else contextlib.nullcontext()):
            tuned = [relax.transform.MetaScheduleApplyDatabase()] if database is not None else []
            passes = (_fusion_passes(target) + tuned + [_default_schedules(target, scheduled)]
                      + _lowering_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return pipeline
