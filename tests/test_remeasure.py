"""A confirmed front: the selection rule, the interval, and `remeasure` on a real study — resumed
after SIGKILL, idempotent on rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import optuna
import pytest

from dlas_dse.analysis.confirmed import front, records as confirmed
from dlas_dse.remeasure import bootstrap_interval

DIRECTIONS = ["maximize", "minimize", "minimize"]  # accuracy, latency_ms, size_bytes


def test_the_front_and_the_trials_within_the_margin_of_it():
    values = {0: [0.9, 10.0, 100.0],   # on the front
              1: [0.9, 10.3, 100.0],   # dominated by 0, but only by 3% in latency
              2: [0.9, 12.0, 100.0],   # dominated by 0 by 20%
              3: [0.8, 5.0, 100.0]}    # on the front: faster, less accurate
    assert front(values, DIRECTIONS, latency=1) == [0, 3]
    assert front(values, DIRECTIONS, latency=1, margin=0.05) == [0, 1, 3]


def test_the_bootstrap_interval_holds_the_median_and_narrows_with_less_spread():
    rng = np.random.default_rng(1)
    wide = list(10 + rng.normal(0, 1.0, 10))
    narrow = list(10 + rng.normal(0, 0.1, 10))
    low, high = bootstrap_interval(wide)
    assert low <= np.median(wide) <= high
    assert bootstrap_interval(wide) == (low, high)  # deterministic
    assert np.subtract(*bootstrap_interval(narrow)[::-1]) < (high - low) / 3


def _records(project, name: str) -> dict[int, dict]:
    storage = f"sqlite:///{project.root / 'results' / name}.db"
    return confirmed(optuna.load_study(study_name=name, storage=storage))


@pytest.mark.slow
def test_remeasure_resumes_after_sigkill_and_is_idempotent(project):
    name = project.tiny(n_trials=2, threads="{choices: [1, 2]}", sampler="random")
    result = project.run("optimize", "--study", name, "--no-progress", "--no-remeasure")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _records(project, name) == {}

    process = subprocess.Popen(project.command("remeasure", "--study", name, "--all", "--rounds", "40"),
                               cwd=project.root, env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        partial = _records(project, name)
        if partial and all(2 <= record["rounds"] < 40 for record in partial.values()):
            break
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.3)
    else:
        raise AssertionError("no partial re-measurement stored")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = _records(project, name)

    result = project.run("remeasure", "--study", name, "--all", "--rounds", "40")
    assert result.returncode == 0, result.stderr[-3000:]
    after = _records(project, name)
    assert set(after) == set(before) and len(after) >= 1
    for number, record in after.items():
        assert record["rounds"] == 40 == len(record["round_ms"])
        assert record["round_ms"][:before[number]["rounds"]] == before[number]["round_ms"]  # kept, not redone
        low, high = record["ci_ms"]
        assert low <= record["latency_ms"] <= high
        assert isinstance(record["on_front"], bool)
    assert "confirmed" in result.stdout

    again = project.run("remeasure", "--study", name, "--all", "--rounds", "40")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _records(project, name) == after  # nothing timed again
    assert "re-measuring" not in again.stdout
