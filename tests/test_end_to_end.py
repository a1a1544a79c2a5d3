"""A tiny real study: training, TVM build, measurement, stored objectives and attributes."""

from __future__ import annotations

import optuna
import pytest
import torch

from dlas_dse.analysis.confirmed import records as confirmed
from dlas_dse.config import load_study
from dlas_dse.space import config_key
from dlas_dse.stack.compilers import fold_batchnorm
from dlas_dse.stack.datasets import load_dataset
from dlas_dse.stack.models import build_model
from dlas_dse.study.opening import open_storage

pytestmark = pytest.mark.slow


def test_tiny_study_stores_objectives_and_provenance(project, monkeypatch):
    name = project.tiny(n_trials=3)  # a budget of 3 over a space of 2 configurations (1 and 2 threads)
    result = project.run("optimize", "--study", name, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout
    assert "stopped after 2 of 3 trials: the space is exhausted: 2 of 2 configurations measured" in result.stdout
    assert "leaked semaphore" not in result.stderr  # trials end by os._exit: nothing may stay registered

    monkeypatch.chdir(project.root)
    config = load_study(name)
    study = optuna.load_study(study_name=name, storage=open_storage(config.storage))
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert len({config_key(t.user_attrs["config"]) for t in trials}) == 2  # none measured twice
    assert study.metric_names == ["accuracy", "latency_ms", "size_bytes"]

    # size: float32 bytes of the BN-folded model's parameters, computed independently
    dataset = load_dataset({"name": "digits", "image_size": 32, "val_fraction": 0.2, "split_seed": 0})
    folded = fold_batchnorm(build_model({"architecture": "mobilenet_v2", "seed": 0}, dataset))
    expected_bytes = 4 * sum(p.numel() for p in folded.parameters())
    for trial in trials:
        accuracy, latency_ms, size_bytes = trial.values
        attrs = trial.user_attrs
        assert 0.3 < accuracy <= 1.0, "the compiled artifact of a trained model beats chance (0.1)"
        assert attrs["accuracy_samples"] == 48
        assert latency_ms == attrs["latency"]["latency_ms"] > 0  # the protocol's statistic (measurement.STATISTIC)
        assert attrs["latency"]["runs"] >= 3 and attrs["latency"]["iqr_ms"] >= 0
        protocol = attrs["latency"]  # rounds, each checked for other processes' CPU use
        assert len(protocol["round_ms"]) == 5 == len(protocol["interference"])
        assert all(load is not None and load <= 0.25 for load in protocol["interference"]) or protocol["noisy"]
        assert attrs["latency_noisy"] == protocol["noisy"]
        assert protocol["statistics"][protocol["statistic"]] == latency_ms
        assert len(protocol["samples_ms"]) == protocol["runs"]
        assert size_bytes == expected_bytes
        assert attrs["verification"]["max_abs_error"] <= attrs["verification"]["allowed_error"]
        assert attrs["verification"]["top1_agreement"] == 1.0
        for stage in ("dataset", "train", "compress", "compile", "verify", "measure", "accuracy"):
            assert attrs[f"time_{stage}_s"] >= 0
        assert attrs["time_trial_s"] >= sum(attrs[f"time_{s}_s"] for s in ("train", "compile", "measure"))
        assert attrs["macs"] > 20_000_000 and attrs["parameters"] > 2_000_000
        assert attrs["versions"]["torch"] == torch.__version__ and attrs["versions"]["tvm"]
        assert attrs["target"]["kind"] == "llvm" and attrs["target"]["mcpu"]
        assert attrs["threads"] == trial.params["hardware.threads"]
        assert attrs["build"]["convolutions_by_algorithm"] == {"direct": 52}
    # the second trial reuses the first one's checkpoint
    assert trials[1].user_attrs["cache_hits"]["train"] is True
    # the end of the study re-timed the front side by side: confirmed figures with an interval
    records = confirmed(study)
    assert records and set(records) <= {t.number for t in trials}
    for record in records.values():
        assert record["rounds"] == 10 and record["ci_ms"][0] <= record["latency_ms"] <= record["ci_ms"][1]

    shown = project.run("show", "--study", name)
    assert shown.returncode == 0 and "Pareto front" in shown.stdout and "mobilenet_v2" not in shown.stderr


def test_rerun_of_a_finished_study_runs_nothing(project):
    name = project.tiny(n_trials=1, threads="1")
    assert project.run("optimize", "--study", name, "--no-progress").returncode == 0
    again = project.run("optimize", "--study", name, "--no-progress")
    assert again.returncode == 0 and "nothing to run" in again.stdout


def test_weights_flag_evaluates_a_checkpoint_instead_of_training(project, monkeypatch):
    dataset = load_dataset({"name": "digits", "image_size": 32, "val_fraction": 0.2, "split_seed": 0})
    checkpoint = project.root / "mine.pt"
    torch.save(build_model({"architecture": "mobilenet_v2", "seed": 5}, dataset).state_dict(), checkpoint)
    name = project.tiny(name="w", n_trials=1, threads="1")
    result = project.run("optimize", "--study", name, "--no-progress", "--weights", str(checkpoint))
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(project.root)
    (trial,) = optuna.load_study(study_name=name, storage=open_storage(load_study(name).storage)).get_trials()
    assert trial.user_attrs["training"]["weights"] == str(checkpoint)
    assert trial.user_attrs["config"]["model.weights"] == str(checkpoint)
    missing = project.run("optimize", "--study", name, "--weights", str(project.root / "nope.pt"))
    assert missing.returncode == 2 and "nope.pt (for mobilenet_v2) does not exist" in missing.stderr
