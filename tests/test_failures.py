"""Crashes, timeouts and wrong outputs become failed trials with a reason; the study goes on."""

from __future__ import annotations

import os
import signal

import numpy as np
import optuna
import psutil
import pytest
import torch

from dlas_dse.cache import ArtifactCache
from dlas_dse.config import load_space, load_study
from dlas_dse.stack.compilers import BuildRequest, compile_model
from dlas_dse.stack.devices import create_device
from dlas_dse.study.opening import open_storage
from dlas_dse.trial import CorrectnessError, TrialFailure, check_against_pytorch, run_trial

pytestmark = pytest.mark.slow


def test_timeouts_fail_trials_and_the_study_goes_on(project, monkeypatch):
    name = project.tiny(seed="{choices: [98, 99]}", threads="1", sampler="grid", timeout=1)  # never cached
    result = project.run("optimize", "--study", name, "--no-progress")
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(project.root)
    study = optuna.load_study(study_name=name, storage=open_storage(load_study(name).storage))
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    for trial in trials:
        assert trial.user_attrs["fail_reason"].startswith("timed out after 1 s in stage")
    assert "FAILED: timed out" in result.stdout + result.stderr


def _trial_processes() -> list[psutil.Process]:
    """Processes forked by this process's multiprocessing fork server."""
    servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
    return [child for server in servers for child in server.children()]


def test_a_crashing_trial_reports_signal_and_stage(project, monkeypatch):
    project.tiny()
    space = load_space(str(project.root / "search_spaces" / "tiny.yaml"))
    config = next(space.grid())
    settings = load_study(str(project.root / "studies" / "tiny.yaml")).settings

    def kill_during_compile(stage: str) -> None:
        if stage == "compile":
            for process in _trial_processes():
                os.kill(process.pid, signal.SIGKILL)

    with pytest.raises(TrialFailure, match="crashed with SIGKILL \\(likely out of memory\\) in stage compile"):
        run_trial(config, settings, str(project.cache), 600, on_stage=kill_during_compile)


def test_a_wrong_artifact_fails_loudly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)).eval()
    device = create_device({"device": "host-cpu", "threads": 1})
    request = BuildRequest(model=model, model_key={"test": "tiny"}, image_shape=(3, 8, 8), batch_size=1,
                           algorithm={"conv": "direct"}, software={"compiler": "tvm", "tuning": "untuned"},
                           device=device)
    executable = compile_model(request, ArtifactCache(tmp_path)).executable
    images = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    record = check_against_pytorch(executable, model, images, tolerance=1e-4)
    assert record["max_abs_error"] < 1e-4 and record["samples"] == 4

    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 0.5  # PyTorch now computes something else
    with pytest.raises(CorrectnessError, match="compiled output differs from PyTorch: max \\|error\\|"):
        check_against_pytorch(executable, model, images, tolerance=1e-4)
