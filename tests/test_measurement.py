"""The measurement protocol: interference accounting, discarded windows, the retry bound,
statistics — and the board-side counters through a real RPC session."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dlas_dse.stack.measurement import (STATISTIC, STATISTICS, CpuTimes, LocalCounters, interference,
                                        measure_latency, parse_proc_stat)

STAT = ("cpu  {user} 0 {system} 5000 20 3 2 {steal} 0 0\n"
        "cpu0 1 0 1 2500 10 0 0 0 0 0\nintr 12345\nctxt 678\n")


def fake_counters(readings: list[dict]) -> LocalCounters:
    """Counters that read successive /proc/stat texts, own CPU times and clock values."""
    sequence, current = iter(readings), {}

    def read_stat() -> str:
        current.update(next(sequence))
        return STAT.format(**current)

    return LocalCounters(read_stat, own=lambda: current["own"], clock=lambda: current["clock"])


def test_interference_is_other_processes_busy_time_plus_steal_in_cores():
    counters = fake_counters([
        {"user": 1000, "system": 500, "steal": 10, "own": 50.0, "clock": 100.0},
        # 2 s later: 300 ticks busy (3.0 s) of which this process 1.0 s, 40 ticks (0.4 s) stolen
        {"user": 1200, "system": 600, "steal": 50, "own": 51.0, "clock": 102.0},
        # 2 s later: all busy time is this process's own
        {"user": 1300, "system": 600, "steal": 50, "own": 52.0, "clock": 104.0},
    ])
    first, second, third = counters(), counters(), counters()
    assert first.busy_s == pytest.approx((1000 + 500 + 3 + 2) / os.sysconf("SC_CLK_TCK"))  # user nice system irq softirq
    assert interference(first, second) == pytest.approx((3.0 - 1.0 + 0.4) / 2.0)
    assert interference(second, third) == 0.0


def test_proc_stat_without_its_cpu_line_is_an_error():
    with pytest.raises(ValueError, match="cpu"):
        parse_proc_stat("intr 1\n", 100.0)


def interference_beside_a_busy_neighbour(counters) -> float:
    """Interference read through ``counters`` over 1 s while another process keeps one core busy."""
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        before = counters()
        time.sleep(1.0)
        return interference(before, counters())
    finally:
        neighbour.kill()
        neighbour.wait()


def test_the_real_counters_see_a_busy_neighbour():
    busy = interference_beside_a_busy_neighbour(LocalCounters())
    assert busy > 0.6  # one core's worth, less what the scheduler gave others


class Load:
    """Counters of a machine where others keep ``cores(t)`` cores busy (``t``: seconds since start)."""

    def __init__(self, cores):
        self.cores, self.started, self.busy, self.last = cores, time.monotonic(), 0.0, 0.0

    def __call__(self) -> CpuTimes:
        now = time.monotonic() - self.started
        self.busy += self.cores(now) * (now - self.last)
        self.last = now
        return CpuTimes(self.busy, 0.0, 0.0, now)


def runner(per_run_s: float = 0.002):
    """A deterministic 'kernel': each run sleeps ``per_run_s`` (and reports it slightly jittered)."""
    rng = np.random.default_rng(0)

    def time_runs(count: int) -> list[float]:
        time.sleep(per_run_s * count)
        return list(per_run_s * (1 + 0.01 * rng.standard_normal(count)))

    return time_runs


PROTOCOL = {"warmup_runs": 1, "min_repeats": 5, "max_repeats": 1000, "min_time_s": 0.25}


def test_a_quiet_machine_keeps_every_window():
    stats = measure_latency(runner(), **PROTOCOL, rounds=5, counters=Load(lambda t: 0.0))
    assert not stats.noisy and stats.discarded == [] and len(stats.round_ms) == 5
    assert stats.interference == [0.0] * 5
    assert stats.statistic == STATISTIC and stats.latency_ms == stats.statistics[STATISTIC]
    assert set(stats.statistics) == set(STATISTICS)
    assert stats.latency_ms == pytest.approx(2.0, rel=0.05)
    assert stats.runs == len(stats.samples_ms) >= 5


def test_busy_windows_are_discarded_and_retimed_once_the_load_stops():
    stats = measure_latency(runner(), **PROTOCOL, rounds=3, max_interference=0.25,
                            counters=Load(lambda t: 1.0 if t < 0.12 else 0.0))
    assert not stats.noisy
    assert stats.discarded and all(load > 0.25 for load in stats.discarded)
    assert all(load <= 0.25 for load in stats.interference) and len(stats.round_ms) == 3


def test_a_load_that_never_stops_completes_flagged_noisy_within_the_bound():
    started = time.monotonic()
    stats = measure_latency(runner(), **PROTOCOL, rounds=3, max_discarded=4, counters=Load(lambda t: 1.0))
    assert time.monotonic() - started < 10
    assert stats.noisy and len(stats.round_ms) == 3
    assert len(stats.discarded) + len(stats.interference) == 4  # 4 windows timed: 3 kept, 1 left discarded
    assert stats.latency_ms > 0


def test_without_counters_the_windows_are_unchecked():
    stats = measure_latency(runner(), **PROTOCOL, rounds=2, counters=None)
    assert stats.interference == [None, None] and not stats.noisy


def test_statistics_over_rounds():
    stats = measure_latency(runner(), **PROTOCOL, rounds=4)
    rounds = np.asarray(stats.samples_ms)
    assert stats.statistics["minimum"] == pytest.approx(rounds.min(), abs=1e-3)
    assert stats.statistics["median"] == pytest.approx(np.median(rounds), abs=1e-3)
    assert stats.statistics["min_round_median"] == pytest.approx(min(stats.round_ms))


def test_a_board_reports_its_own_interference(tmp_path):
    """The counters are read on the board (here: this host behind a real RPC tracker): a neighbour
    busy there shows up; the board session's own kernels do not."""
    from dlas_dse.stack.remote import RemoteSession, loopback_tracker

    with loopback_tracker("dlas-measurement-test", tmp_path / "server.log") as port:
        session = RemoteSession("127.0.0.1", port, "dlas-measurement-test", 1, 120)
        counters = session.cpu_counters(None)
        quiet_before = counters()
        time.sleep(1.0)
        quiet = interference(quiet_before, counters())
        busy = interference_beside_a_busy_neighbour(counters)
        del session, counters
        gc.collect()
    assert busy > 0.6 and busy > quiet + 0.5
