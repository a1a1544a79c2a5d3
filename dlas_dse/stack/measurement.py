"""The latency protocol shared by every runner: the thread count, warm-up, repeat until enough
time, robust stats."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import time

import numpy as np


@dataclass
class LatencyStats:
    """Summary of timed runs, in milliseconds."""

    median_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup_runs: int
    cooldown_s: float

    def as_dict(self) -> dict:
        """Plain dict, for trial attributes."""
        return asdict(self)


def measure_latency(time_runs: Callable[[int], list[float]], warmup_runs: int, min_repeats: int,
                    max_repeats: int, min_time_s: float, cooldown_s: float = 0.0) -> LatencyStats:
    """Time a runner: ``time_runs(n)`` executes ``n`` runs and returns each one's seconds.

    Waits ``cooldown_s`` idle, runs ``warmup_runs`` untimed, then batches of timed runs until at
    least ``min_repeats`` runs and ``min_time_s`` seconds of measured time (at most ``max_repeats``).
    """
    if cooldown_s:
        time.sleep(cooldown_s)
    if warmup_runs:
        time_runs(warmup_runs)
    samples = list(time_runs(min_repeats))
    while len(samples) < max_repeats and sum(samples) < min_time_s:
        per_run = max(np.median(samples), 1e-6)
        wanted = int((min_time_s - sum(samples)) / per_run) + 1
        samples += time_runs(min(wanted, max_repeats - len(samples)))
    ms = np.asarray(samples) * 1e3
    q1, q3 = np.percentile(ms, [25, 75])
    return LatencyStats(float(np.median(ms)), float(q3 - q1), float(ms.mean()), float(ms.min()),
                        float(ms.max()), len(ms), warmup_runs, cooldown_s)


def set_runtime_threads(get_function: Callable[[str], Any], threads: int, where: str, remedy: str) -> None:
    """Run TVM's kernels on ``threads`` threads, through ``get_function`` (this process's global
    functions or a board's), and check that they do: TVM sizes its thread pool once per process, at
    first use (from TVM_NUM_THREADS, else half the cores of an x86 CPU), and silently runs fewer
    threads than asked beyond that size. Raises RuntimeError naming ``where`` and the ``remedy``."""
    get_function("runtime.config_threadpool")(1, threads)
    running = get_function("runtime.NumThreads")()
    if running != threads:
        raise RuntimeError(f"{where} runs TVM kernels on {running} thread(s), not the {threads} asked for: "
                           f"TVM sized its thread pool at first use to fewer threads. {remedy}")
