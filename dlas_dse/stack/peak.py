"""A CPU's measured peak: float32 GFLOP/s of a compute-bound GEMM, cached per CPU and thread count.

The microbenchmark is NumPy's matrix product (OpenBLAS, whose kernels are hand-written for the
CPU's vector unit) at sizes from 1024 to 3072 — large enough to be bound by arithmetic, not by
memory — limited to the trial's thread count. The best size's median counts. A trial's achieved
GFLOP/s divided by this figure says how much of the machine a configuration uses.
"""

from __future__ import annotations

import time

import numpy as np
import threadpoolctl

from dlas_dse.cache import ArtifactCache, code_fingerprint

GEMM_SIZES = (1024, 2048, 3072)
RUNS_PER_SIZE = 7


def _median_gflops(size: int, rng: np.random.Generator) -> float:
    """Median GFLOP/s of ``RUNS_PER_SIZE`` products of two ``size``×``size`` float32 matrices."""
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    a @ b  # warm-up: threads started, pages touched
    seconds = []
    for _ in range(RUNS_PER_SIZE):
        started = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - started)
    return 2 * size ** 3 / float(np.median(seconds)) / 1e9


def measure_cpu_peak(threads: int) -> dict:
    """Measure this CPU's float32 peak with ``threads`` threads: ``gflops`` plus how it was measured."""
    rng = np.random.default_rng(0)
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        per_size = {size: _median_gflops(size, rng) for size in GEMM_SIZES}
    library = next((f"{info['internal_api']} {info['version']} ({info.get('architecture', '?')} kernels)"
                    for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"), "unknown BLAS")
    return {"gflops": max(per_size.values()), "threads": threads,
            "method": f"float32 GEMM, NumPy matmul on {library}, median of {RUNS_PER_SIZE} runs per size, "
                      "best size", "gflops_per_size": {str(size): value for size, value in per_size.items()}}


def cpu_peak(cache: ArtifactCache, cpu: str, threads: int, measure: bool = True) -> dict | None:
    """The peak of CPU ``cpu`` at ``threads`` threads, measured once per cache (not measured, and
    None if it was not yet, when ``measure`` is false)."""
    inputs = {"cpu": cpu, "threads": threads, "code": code_fingerprint(measure_cpu_peak, _median_gflops)}
    if not measure and not cache.contains("peak", cache.key_for("peak", inputs)):
        return None
    return cache.get_or_compute_json("peak", inputs, lambda: measure_cpu_peak(threads))[0]
