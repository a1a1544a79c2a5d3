"""A study killed with SIGKILL mid-trial resumes with every finished trial intact."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from dlas_dse.config import load_study
from dlas_dse.study.opening import open_storage

pytestmark = pytest.mark.slow


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _running_trial(name: str, storage):
    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return None
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    running = [t for t in trials if t.state == TrialState.RUNNING and "config" in t.user_attrs]
    return done, running


def _start_grid_study(project, monkeypatch, seeds: str):
    """Start a grid study over ``seeds`` in the background; returns its name, storage, process."""
    name = project.tiny(seed=seeds, threads="1", sampler="grid")
    monkeypatch.chdir(project.root)
    with open(project.root / "stderr.log", "w") as stderr:  # a file never blocks the writer
        process = subprocess.Popen(project.command("optimize", "--study", name, "--no-progress"),
                                   cwd=project.root, env=project.env(), stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    return name, open_storage(load_study(name).storage), process


def test_sigkill_mid_trial_then_rerun_keeps_finished_trials(project, monkeypatch):
    name, storage, process = _start_grid_study(project, monkeypatch, "{choices: [10, 11, 12]}")

    def second_trial_running():
        state = _running_trial(name, storage)
        return state if state and all(state) else None

    done, running = _wait_for(second_trial_running, 600, "a finished trial and a running one")
    trial_processes = psutil.Process(process.pid).children(recursive=True)
    os.kill(process.pid, signal.SIGKILL)  # the study process only: its trial must not outlive it
    process.wait()
    _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in trial_processes),
              30, "the orphaned trial process to exit")

    result = project.run("optimize", "--study", name, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"trials [{running[0].number}] were interrupted" in result.stdout

    trials = {t.number: t for t in optuna.load_study(study_name=name, storage=storage).get_trials()}
    for finished in done:  # finished before the kill: intact
        assert trials[finished.number].state == TrialState.COMPLETE
        assert trials[finished.number].values == finished.values
    interrupted = trials[running[0].number]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["fail_reason"].startswith("interrupted: worker process")
    retries = [t for t in trials.values() if t.user_attrs.get("retry_of") == interrupted.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == interrupted.params
    completed = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.seed"] for t in completed) == [10, 11, 12]  # each grid point once


def test_ctrl_c_mid_trial_is_retried_on_resume(project, monkeypatch):
    name, storage, process = _start_grid_study(project, monkeypatch, "{choices: [20, 21]}")

    def a_trial_running():
        state = _running_trial(name, storage)
        return state[1] if state and state[1] else None

    running = _wait_for(a_trial_running, 600, "a running trial")
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    assert process.returncode == 130
    assert "rerun the same command to resume" in (project.root / "stderr.log").read_text()

    result = project.run("optimize", "--study", name, "--no-progress")
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    interrupted = trials[running[0].number]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["fail_reason"].startswith("interrupted by the user")
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.seed"] for t in completed) == [20, 21]
    assert any(t.user_attrs.get("retry_of") == interrupted.number for t in completed)
