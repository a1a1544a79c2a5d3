"""A CPU's float32 peak: GFLOP/s of an FMA microkernel built by TVM for the device's target,
cached per CPU, target and thread count.

Each thread runs independent chains of vector fused multiply-adds (``acc = fma(acc, step, acc)``:
the accumulator is the addend, so no architecture needs a register copy per FMA) held in
registers: no memory traffic in the loop, and more chains than any CPU's FMA latency × FMA ports,
so the units never wait. The kernel is built at the CPU's widest vector and at half of it (some
CPUs clock higher on narrower vectors) and timed by TVM's ``time_evaluator`` call by call; the best
call counts. The peak is the larger of the best at the trial's threads and that many times the
best on one thread: the most this CPU does, so that a trial's achieved GFLOP/s divided by it is a
share of the machine that cannot exceed 100 % (of float32 arithmetic: int8 dot products, fp16 and
fewer multiplications than the convolution's MACs — Winograd, sparse weights — can). A GEMM library
is no such bound: NumPy's OpenBLAS read half of what ONNX Runtime achieved on this workplace's
machines.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from dlas_dse.cache import ArtifactCache, code_fingerprint
from dlas_dse.lazy import lazy_import
from dlas_dse.stack.algorithms.schedule import lanes, vector_bits
from dlas_dse.stack.cpu_features import system_cpu
from dlas_dse.stack.measurement import set_runtime_threads

tvm = lazy_import("tvm")
T = lazy_import("tvm.script.tirx")

KERNEL = "fma_peak"
ITERATIONS = 1 << 18
"""FMA steps of every chain per call: about a millisecond, so that waking the threads hardly counts."""
ROUNDS = 200
"""Calls timed one by one; the best counts (short calls: on a shared machine some fall between
other processes' bursts)."""
MAX_CHAINS = 16
"""Independent FMA chains per thread: 4-cycle latency × 4 ports, the widest CPU core seen."""
STEP = -1e-7
"""Every FMA multiplies a chain by ``1 + STEP``: starting between 1 and 2, a chain shrinks by a few
per cent in ``ITERATIONS`` steps, far from overflow and from denormals."""


def host_target() -> dict:
    """This machine's LLVM target (the detected ``-mcpu``)."""
    return {"kind": "llvm", "mcpu": system_cpu()}


def vector_registers(target: tvm.target.Target) -> int:
    """Vector registers of the target's CPU: 16 on x86 without AVX-512, 32 on x86 with it, on
    AArch64 and on RISC-V."""
    is_x86 = tvm.target.codegen.target_has_features("sse2", target)
    return 16 if is_x86 and vector_bits(target) < 512 else 32


def fma_chains(target: tvm.target.Target) -> int:
    """Independent FMA chains per thread: as many as cover the widest core, leaving registers for
    the step (and some slack) so that no chain spills to memory."""
    return min(MAX_CHAINS, vector_registers(target) - 4)


def fma_kernel(threads: int, width: int, chains: int, iterations: int) -> tvm.tirx.PrimFunc:
    """``threads`` parallel tasks, each running ``chains`` chains of ``width``-lane float32 FMAs
    for ``iterations`` steps in a stack buffer that LLVM keeps in registers, then storing them."""

    @T.prim_func
    def fma_peak(step: T.Buffer((1,), "float32"), out: T.Buffer((threads, chains, width), "float32")):
        T.func_attr({"global_symbol": KERNEL, "tir.noalias": True})
        for task in T.parallel(threads):
            # on the task's stack, not in TVM's workspace, so that LLVM promotes it to registers
            accumulators = T.alloc_buffer((chains, width), "float32", annotations={"disable_lower_builtin": True})
            for chain in T.unroll(chains):
                for lane in T.vectorized(width):
                    accumulators[chain, lane] = T.float32(1) + T.Cast("float32", chain * width + lane) * T.float32(1e-3)
            factor: T.let[T.float32] = step[0]
            for _ in range(iterations):
                for chain in T.unroll(chains):
                    for lane in T.vectorized(width):
                        accumulators[chain, lane] = T.fma(accumulators[chain, lane], factor, accumulators[chain, lane])
            for chain in T.unroll(chains):
                for lane in T.vectorized(width):
                    out[task, chain, lane] = accumulators[chain, lane]

    return fma_peak


def build_fma_kernel(target: tvm.target.Target, threads: int, width: int) -> tvm.runtime.Module:
    """The FMA kernel with ``width`` lanes built for ``target`` (its assembly:
    ``inspect_source("asm")``)."""
    kernel = fma_kernel(threads, width, fma_chains(target), ITERATIONS)
    return tvm.compile(tvm.IRModule({KERNEL: kernel}), target=target).mod


def best_call_gflops(kernel: tvm.runtime.Module, threads: int, width: int, chains: int) -> float:
    """GFLOP/s of the best of ``ROUNDS`` calls of ``kernel``, each timed alone by
    ``time_evaluator``."""
    step = tvm.runtime.tensor(np.array([STEP], dtype=np.float32))
    out = tvm.runtime.tensor(np.zeros((threads, chains, width), dtype=np.float32))
    timer = kernel.time_evaluator(KERNEL, tvm.cpu(0), number=1, repeat=ROUNDS)
    return 2 * threads * chains * width * ITERATIONS / min(timer(step, out).results) / 1e9


@contextmanager
def runtime_threads(threads: int) -> Iterator[None]:
    """Run TVM kernels on ``threads`` threads inside the block (checked), and on as many as before
    after it."""
    before = tvm.get_global_func("runtime.NumThreads")()
    set_runtime_threads(tvm.get_global_func, threads, "this process",
                        "Configure the device (Device.configure_runtime) before anything runs a TVM kernel "
                        "in the process, or set TVM_NUM_THREADS to at least the threads asked for.")
    try:
        yield
    finally:
        tvm.get_global_func("runtime.config_threadpool")(1, before)


def gflops_per_width(target: tvm.target.Target, threads: int, widths: list[int]) -> dict[int, float]:
    """The best GFLOP/s of the FMA kernel at each vector width (lanes) on ``threads`` threads."""
    with runtime_threads(threads):
        return {width: best_call_gflops(build_fma_kernel(target, threads, width), threads, width,
                                         fma_chains(target)) for width in widths}


def measure_cpu_peak(threads: int, target: dict | None = None) -> dict:
    """Measure this CPU's float32 peak with ``threads`` threads and the FMA kernel built for
    ``target`` (default: this machine's): ``gflops`` plus how it was measured.

    The peak is the larger of the best call at ``threads`` threads and ``threads`` times the best
    call on one thread: no core outruns a lone thread, and on a shared machine a call on one thread
    needs one quiet core, not ``threads`` quiet at once."""
    compiled_for = tvm.target.Target(target or host_target())
    widest = vector_bits(compiled_for)
    widths = [lanes(bits, "float32") for bits in (widest, widest // 2) if bits >= 128]
    at_threads = gflops_per_width(compiled_for, threads, widths)
    one_thread = at_threads if threads == 1 else gflops_per_width(compiled_for, 1, widths)
    return {"gflops": max(*at_threads.values(), threads * max(one_thread.values())), "threads": threads,
            "method": f"TVM FMA microkernel for {compiled_for.attrs.get('mcpu', compiled_for.kind.name)}: "
                      f"{fma_chains(compiled_for)} independent float32 FMA chains per thread on registers, "
                      f"vectors of {' and '.join(map(str, widths))} lanes, best of {ROUNDS} calls; the larger "
                      f"of the best at {threads} thread(s) and {threads} x the best at 1 thread",
            "gflops_at_threads": {str(width): value for width, value in at_threads.items()},
            "gflops_one_thread": {str(width): value for width, value in one_thread.items()}}


def cpu_peak(cache: ArtifactCache, cpu: str, threads: int, measure: bool = True,
             target: dict | None = None) -> dict | None:
    """The peak of CPU ``cpu`` at ``threads`` threads for ``target`` (default: this machine's),
    measured once per cache (not measured, and None if it was not yet, when ``measure`` is false)."""
    inputs = {"cpu": cpu, "threads": threads, "target": target or host_target(),
              "code": code_fingerprint(sys.modules[__name__])}
    if not measure and not cache.contains("peak", cache.key_for("peak", inputs)):
        return None
    return cache.get_or_compute_json("peak", inputs, lambda: measure_cpu_peak(threads, target))[0]
