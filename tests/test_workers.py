"""Many workers on the real PostgreSQL server: every grid point runs exactly once, and a worker
killed with SIGKILL mid-trial does not stop the grid from completing. Each test creates and drops
its own database; without a reachable server the tests skip and say why."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import time

import optuna
import psutil
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.slow
GRID_SPACE_CHANGES = {"  technique: none\n": "  technique: {choices: [none, fp16]}\n",
                      "  conv: direct\n": "  conv: {choices: [direct, gemm]}\n"}
POINTS = 2 * 2 * 2  # compression x algorithm x threads


def grid_study(project) -> str:
    """A tiny grid (8 points sharing one trained model) with fast heartbeats."""
    name = project.tiny(threads="{choices: [1, 2]}", sampler="grid")
    space = project.root / "search_spaces" / f"{name}.yaml"
    text = space.read_text()
    for old, new in GRID_SPACE_CHANGES.items():
        text = text.replace(old, new)
    space.write_text(text)
    study = project.root / "studies" / f"{name}.yaml"
    study.write_text(study.read_text() + "workers: {heartbeat_interval_s: 2, grace_period_s: 8}\n")
    return name


def start_worker(project, name: str, url: str, log_name: str) -> subprocess.Popen:
    with open(project.root / log_name, "w") as log:  # a file never blocks the writer
        return subprocess.Popen(project.command("worker", "--study", name, "--storage", url, "--no-progress"),
                                cwd=project.root, env=project.env(), stdout=log, stderr=subprocess.STDOUT)


def completed_points(name: str, url: str) -> collections.Counter:
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    return collections.Counter(json.dumps(t.params, sort_keys=True) for t in trials if t.state == TrialState.COMPLETE)


def trials_or_none(name: str, url: str) -> list:
    """The study's trials, or none while no worker has created the study yet."""
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials()
    except KeyError:
        return []


def wait_all(processes: list[subprocess.Popen], project, timeout: float) -> None:
    for index, process in enumerate(processes):
        try:
            assert process.wait(timeout) == 0, (project.root / f"worker{index}.log").read_text()[-3000:]
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise


def test_three_workers_run_every_point_exactly_once(project, database):
    name = grid_study(project)
    project.cache = project.root / "shared-cache"  # empty, shared by the three workers (DLAS_CACHE_DIR)
    workers = [start_worker(project, name, database, f"worker{index}.log") for index in range(3)]
    wait_all(workers, project, timeout=1500)
    points = completed_points(name, database)
    assert len(points) == POINTS and set(points.values()) == {1}
    trials = optuna.load_study(study_name=name, storage=database).get_trials()
    assert not [t for t in trials if t.state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len({t.user_attrs["worker"]["pid"] for t in done}) >= 2
    # the shared cache ran every stage once per distinct input, whichever worker got there first:
    # one training, a compression per technique, a build per (technique, algorithm) - threads share it
    executed = collections.Counter(stage for t in done for stage, hit in t.user_attrs["cache_hits"].items() if not hit)
    assert executed["train"] == 1 and executed["compress"] == 2 and executed["build"] == 4, executed


def test_a_worker_killed_mid_trial_does_not_stop_the_grid(project, database):
    name = grid_study(project)
    victim = start_worker(project, name, database, "worker0.log")
    deadline = time.monotonic() + 900
    while True:  # until the victim is running a trial (its trial process exists)
        assert time.monotonic() < deadline, (project.root / "worker0.log").read_text()[-3000:]
        running = [t for t in trials_or_none(name, database) if t.state == TrialState.RUNNING and "config" in t.user_attrs]
        if running and psutil.Process(victim.pid).children(recursive=True):
            break
        time.sleep(1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = start_worker(project, name, database, "worker1.log")
    wait_all([survivor], project, timeout=1500)
    points = completed_points(name, database)
    assert len(points) == POINTS and set(points.values()) == {1}
    trials = optuna.load_study(study_name=name, storage=database).get_trials()
    killed = [t for t in trials if t.number == running[0].number][0]
    assert killed.state == TrialState.FAIL and "stopped mid-trial" in killed.user_attrs["fail_reason"]


def test_a_second_worker_on_the_same_machine_is_noticed(tmp_path):
    """Workers of one study on one host are found from their running trials (live ones only)."""
    from dlas_dse.study.workers import workers_beside_us

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/beside.db", directions=["minimize"])
    other = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (other.pid, os.getpid()):
            process = psutil.Process(pid)
            trial = study.ask()
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": pid, "started": process.create_time()})
        assert workers_beside_us(study) == [other.pid]  # ourselves excluded
    finally:
        other.kill()
        other.wait()
    assert workers_beside_us(study) == []  # a dead worker is no longer competing
