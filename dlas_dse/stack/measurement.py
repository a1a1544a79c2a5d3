"""The latency protocol shared by every runner: the thread count, warm-up, timed rounds whose CPU
interference is checked, and the statistics that become a trial's latency.

A measurement is ``rounds`` timed windows. Around each window the CPU counters of the machine
that runs the kernels (this one, or a board through its RPC session) are read; the CPU time that
*other* processes took during the window (all cores' busy time minus the measuring process's own,
plus time stolen by the hypervisor), in cores' worth, is the window's ``interference``. A window
above ``max_interference`` is discarded and timed again after a growing pause, at most
``max_discarded`` times per measurement; when that bound is spent the least-interfered discarded
windows fill the remaining rounds and the measurement is flagged ``noisy`` — it never hangs and
never hides that its figure was taken on a busy machine.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

STATISTIC = "median"
"""The statistic that becomes ``latency_ms``: the median of the kept rounds' runs, the most repeatable
of :data:`STATISTICS` in ``benchmarks/measurement.py`` (mean IQR/median of 20 re-measurements over
three artifacts, with and without a background load: median 3.1%, trimmed mean 3.1%, minimum 3.2%,
min of round medians 3.7%; BENCHMARKS.md)."""
MIN_WINDOW_S = 0.1
"""Shortest timed window: the kernel's CPU accounting ticks at 100 Hz, so a shorter window cannot
tell a neighbour's load from rounding."""
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.05, 1.0
KEPT_SAMPLES = 512
"""At most this many run times are kept in the record (evenly subsampled beyond)."""


# --------------------------------------------------------------------------- CPU counters

@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds of a machine since boot — all cores' busy and stolen time, the measuring
    process's own — and a wall clock, read together."""

    busy_s: float
    steal_s: float
    own_s: float
    wall_s: float


def parse_proc_stat(text: str, ticks_per_s: float) -> tuple[float, float]:
    """Busy and steal seconds of all cores from the text of ``/proc/stat`` (its ``cpu`` line:
    user nice system idle iowait irq softirq steal ...; guest time is already part of user)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(value) for value in fields[1:]] + [0] * 8
            user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
            return (user + nice + system + irq + softirq) / ticks_per_s, steal / ticks_per_s
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


class LocalCounters:
    """This machine's counters: ``/proc/stat`` for all cores, ``os.times`` for this process."""

    def __init__(self, read_stat: Callable[[], str] = lambda: Path("/proc/stat").read_text(),
                 own: Callable[[], float] = lambda: sum(os.times()[:2]),
                 clock: Callable[[], float] = time.monotonic):
        self._read_stat, self._own, self._clock = read_stat, own, clock
        self._ticks_per_s = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0

    def __call__(self) -> CpuTimes:
        busy, steal = parse_proc_stat(self._read_stat(), self._ticks_per_s)
        return CpuTimes(busy, steal, self._own(), self._clock())


def local_counters() -> Callable[[], CpuTimes] | None:
    """This machine's counters, or None where there is no ``/proc/stat`` to read."""
    return LocalCounters() if Path("/proc/stat").exists() else None


def interference(before: CpuTimes, after: CpuTimes) -> float:
    """Cores' worth of CPU that other processes (and the hypervisor) took between two readings:
    0 on an idle machine, 1.0 when a neighbour kept one core busy the whole time."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    stolen = after.steal_s - before.steal_s
    return max(0.0, others + stolen) / wall


# --------------------------------------------------------------------------- statistics

def trimmed_mean(values: np.ndarray, cut: float = 0.1) -> float:
    """Mean of ``values`` without the lowest and highest ``cut`` share."""
    ordered = np.sort(values)
    drop = int(len(ordered) * cut)
    return float(ordered[drop:len(ordered) - drop].mean())


STATISTICS: dict[str, Callable[[list[np.ndarray]], float]] = {
    "median": lambda rounds: float(np.median(np.concatenate(rounds))),
    "minimum": lambda rounds: float(np.concatenate(rounds).min()),
    "trimmed_mean": lambda rounds: trimmed_mean(np.concatenate(rounds)),
    "min_round_median": lambda rounds: float(min(np.median(r) for r in rounds)),
}
"""Candidate latency statistics over the kept rounds' run times (ms)."""


def compact(samples: np.ndarray, most: int = KEPT_SAMPLES) -> list[float]:
    """At most ``most`` of ``samples`` (evenly spaced in run order), rounded to 0.1 µs."""
    if len(samples) > most:
        samples = samples[np.linspace(0, len(samples) - 1, most).round().astype(int)]
    return [round(float(value), 4) for value in samples]


@dataclass
class LatencyStats:
    """Summary of a measurement, in milliseconds, with how it was taken."""

    latency_ms: float
    statistic: str
    statistics: dict
    median_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup_runs: int
    cooldown_s: float
    round_ms: list[float]
    """The :data:`STATISTIC`'s per-round figure (each round's median), for intervals later."""
    interference: list[float | None]
    """Other processes' CPU during each kept window (cores' worth; None where unknown)."""
    discarded: list[float] = field(default_factory=list)
    """Interference of each window discarded as too busy."""
    noisy: bool = False
    samples_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time the whole measurement took."""

    def as_dict(self) -> dict:
        """Plain dict, for trial attributes."""
        return asdict(self)


# --------------------------------------------------------------------------- the protocol

@dataclass
class _Window:
    runs_ms: np.ndarray
    interference: float | None


def _timed_window(time_runs: Callable[[int], list[float]], runs: int,
                  counters: Callable[[], CpuTimes] | None) -> _Window:
    """Time ``runs`` runs between two readings of ``counters``."""
    before = counters() if counters else None
    seconds = time_runs(runs)
    load = interference(before, counters()) if counters else None
    return _Window(np.asarray(seconds, dtype=float) * 1e3, load)


def _runs_per_window(per_run_s: float, rounds: int, min_repeats: int, max_repeats: int, min_time_s: float) -> int:
    """Runs in each window: enough for ``min_time_s`` over all rounds (and a window of at least
    :data:`MIN_WINDOW_S`), at least ``min_repeats`` in all, at most ``max_repeats`` in all."""
    window_s = max(min_time_s / rounds, MIN_WINDOW_S)
    wanted = max(math.ceil(window_s / max(per_run_s, 1e-7)), math.ceil(min_repeats / rounds))
    return max(1, min(wanted, max_repeats // rounds))


def measure_latency(time_runs: Callable[[int], list[float]], warmup_runs: int, min_repeats: int,
                    max_repeats: int, min_time_s: float, cooldown_s: float = 0.0, rounds: int = 5,
                    max_interference: float = 0.25, max_discarded: int = 10,
                    counters: Callable[[], CpuTimes] | None = None) -> LatencyStats:
    """Time a runner: ``time_runs(n)`` executes ``n`` runs and returns each one's seconds.

    Waits ``cooldown_s`` idle, runs ``warmup_runs`` untimed (at least one, which also sizes the
    windows), then ``rounds`` windows whose interference (read through ``counters``; unchecked
    when None) is at most ``max_interference`` cores (see the module's docstring)."""
    started = time.perf_counter()
    if cooldown_s:
        time.sleep(cooldown_s)
    per_run_s = float(np.median(time_runs(max(warmup_runs, 1))))
    runs = _runs_per_window(per_run_s, rounds, min_repeats, max_repeats, min_time_s)
    kept: list[_Window] = []
    discarded: list[_Window] = []
    backoff = FIRST_BACKOFF_S
    while len(kept) < rounds:
        window = _timed_window(time_runs, runs, counters)
        if window.interference is None or window.interference <= max_interference:
            kept.append(window)
            continue
        discarded.append(window)
        if len(discarded) >= max_discarded:
            break
        time.sleep(backoff)
        backoff = min(2 * backoff, MAX_BACKOFF_S)
    noisy = len(kept) < rounds
    if noisy:  # the bound is spent: the quietest of the busy windows complete the rounds
        discarded.sort(key=lambda w: w.interference)
        missing = rounds - len(kept)
        kept, discarded = kept + discarded[:missing], discarded[missing:]
    return _summarise(kept, discarded, noisy, warmup_runs, cooldown_s, time.perf_counter() - started)


def _summarise(kept: list[_Window], discarded: list[_Window], noisy: bool, warmup_runs: int,
               cooldown_s: float, seconds: float) -> LatencyStats:
    rounds = [window.runs_ms for window in kept]
    ms = np.concatenate(rounds)
    statistics = {name: statistic(rounds) for name, statistic in STATISTICS.items()}
    q1, q3 = np.percentile(ms, [25, 75])
    return LatencyStats(
        statistics[STATISTIC], STATISTIC, statistics, float(np.median(ms)), float(q3 - q1), float(ms.mean()),
        float(ms.min()), float(ms.max()), len(ms), warmup_runs, cooldown_s,
        round_ms=[float(np.median(r)) for r in rounds],
        interference=[None if w.interference is None else round(w.interference, 4) for w in kept],
        discarded=[round(w.interference, 4) for w in discarded], noisy=noisy, samples_ms=compact(ms),
        seconds=seconds)


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
