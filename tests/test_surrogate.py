"""The XGBoost latency surrogate: static descriptors against what the real builds counted, the
saved model and its schema checks, predictions through the CLI, and evaluation on held-out trials
only, all on a real finished study."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pandas as pd
import pytest
import xgboost
from conftest import TINY_STUDY

from dlas_dse.study.opening import load_stored_study
from dlas_dse.surrogate.descriptors import architecture_profile, model_descriptors
from dlas_dse.surrogate.features import FeatureSchema, SchemaMismatch, active_parameters
from dlas_dse.surrogate.hypervolume import hypervolume
from dlas_dse.surrogate.model import METADATA_ATTRIBUTE

BASE = {"dataset.name": "digits", "dataset.image_size": 32, "model.architecture": "resnet18",
        "compression.technique": "none", "compression.sparsity": 0.8, "compression.ratio": 0.5,
        "algorithm.conv": "direct", "algorithm.format": "dense", "hardware.device": "host-cpu", "hardware.threads": 1}


def test_parameters_of_techniques_not_chosen_are_not_features():
    assert "compression.sparsity" not in active_parameters(BASE)
    assert active_parameters({**BASE, "compression.technique": "weight_pruning"})["compression.sparsity"] == 0.8
    assert "compression.ratio" in active_parameters({**BASE, "compression.technique": "channel_pruning"})


def test_compression_changes_the_static_descriptors_the_way_it_changes_the_model():
    dense = model_descriptors(BASE)
    pruned = model_descriptors({**BASE, "compression.technique": "channel_pruning"})
    sparse = model_descriptors({**BASE, "compression.technique": "weight_pruning", "algorithm.format": "sparse"})
    int8 = model_descriptors({**BASE, "compression.technique": "int8"})
    assert pruned["log_macs"] == pytest.approx(dense["log_macs"] + 2 * math.log(0.5))  # half the channels in and out
    assert sparse["log_executed_macs"] == pytest.approx(dense["log_executed_macs"] + math.log(0.2))
    assert sparse["log_macs"] == dense["log_macs"]  # dense execution of a pruned model does every MAC
    assert int8["weight_bits"] == 8 and int8["log_deployed_bytes"] == pytest.approx(dense["log_deployed_bytes"]
                                                                                     - math.log(4))
    assert dense["depthwise_convs"] == 0 and model_descriptors(
        {**BASE, "model.architecture": "mobilenet_v2"})["depthwise_convs"] == 17


def test_depthwise_work_shrinks_with_the_channels_once_not_twice():
    mobile = {**BASE, "model.architecture": "mobilenet_v2"}
    dense, pruned = model_descriptors(mobile), model_descriptors({**mobile, "compression.technique": "channel_pruning"})
    profile = architecture_profile("mobilenet_v2", 32, 10)
    assert 0 < dense["depthwise_mac_share"] == pytest.approx(profile["depthwise_macs"] / profile["macs"])
    assert 0 < dense["pointwise_mac_share"] < 1 - dense["depthwise_mac_share"]
    # half the channels: the depthwise MACs halve, every other convolution's quarter
    depthwise, others = profile["depthwise_macs"], profile["macs"] - profile["depthwise_macs"]
    assert math.exp(pruned["log_macs"]) == pytest.approx(depthwise * 0.5 + others * 0.25)
    assert pruned["depthwise_mac_share"] > dense["depthwise_mac_share"]
    assert pruned["log_outputs"] == pytest.approx(dense["log_outputs"] + math.log(0.5))
    assert model_descriptors(BASE)["depthwise_mac_share"] == 0  # resnet18 has none


def test_feature_schema_encodes_text_one_hot_and_refuses_unknown_parameters():
    rows = [{"model.architecture": "resnet18", "hardware.threads": 1}, {"model.architecture": "mobilenet_v2"}]
    schema = FeatureSchema.fit(rows)
    assert schema.columns == ["hardware.threads", "model.architecture=mobilenet_v2", "model.architecture=resnet18"]
    matrix = schema.encode(rows + [{"model.architecture": "vgg16_bn", "hardware.threads": 2}])
    assert matrix[0].tolist() == [1.0, 0.0, 1.0]
    assert math.isnan(matrix[1][0]) and matrix[1][1:].tolist() == [1.0, 0.0]
    assert matrix[2].tolist() == [2.0, 0.0, 0.0]  # an architecture never seen: no category, descriptors still speak
    with pytest.raises(SchemaMismatch, match="algorithm.conv.*Retrain"):
        schema.check([{"algorithm.conv": "gemm"}])
    with pytest.raises(SchemaMismatch, match="version 0"):
        FeatureSchema.from_dict({**schema.to_dict(), "version": 0})


def test_static_macs_match_what_the_tvm_builds_counted(finished_study):
    project, name = finished_study
    study = load_stored_study(str(project.root / "studies" / f"{name}.yaml"), project.storage + f"{name}.db")
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        config = trial.user_attrs["config"]
        profile = architecture_profile(config["model.architecture"], 32, 10)
        assert profile["macs"] == pytest.approx(trial.user_attrs["macs"], rel=0.01), config["model.architecture"]
        assert profile["parameters"] == trial.user_attrs["parameters"]


@pytest.fixture(scope="module")
def trained(finished_study):
    project, name = finished_study
    result = project.run("surrogate", "train", "--study", name, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return project, name, project.root / "results" / "surrogate" / f"{name}.json"


def test_train_saves_xgboost_json_with_schema_versions_and_studies(trained):
    _, name, path = trained
    saved = json.loads(path.read_text())
    assert "learner" in saved  # XGBoost's own JSON model format
    booster = xgboost.Booster(model_file=str(path))
    attached = json.loads(booster.attr(METADATA_ATTRIBUTE))
    assert attached["studies"] == [name] and attached["trained_on"] == 8
    assert attached["versions"]["xgboost"] == xgboost.__version__
    assert "model.architecture" in attached["schema"]["parameters"]


def test_predict_ranks_the_grid_like_the_measurements(trained):
    project, name, _ = trained
    out = project.root / "predicted.csv"
    result = project.run("surrogate", "predict", "--study", name, "--grid", "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out)
    assert len(table) == 8 and (table["predicted_latency_ms"] > 0).all()
    fastest = table.nsmallest(4, "predicted_latency_ms")
    assert set(fastest["model.architecture"]) == {"mobilenet_v2"}  # measured ~5x faster than resnet18 here
    one = project.run("surrogate", "predict", "--study", name, "--params", "model.architecture=resnet18",
                      "algorithm.conv=gemm", "hardware.threads=2", timeout=600)
    assert one.returncode == 0 and "resnet18" in one.stdout and "gemm" in one.stdout
    configs = project.root / "configs.yaml"
    configs.write_text("- {model: {architecture: mobilenet_v2}, hardware: {threads: 2}}\n"
                       "- {model.architecture: resnet18, algorithm.conv: gemm}\n")
    listed = project.run("surrogate", "predict", "--study", name, "--config", str(configs), "--out", str(out))
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert sorted(pd.read_csv(out)["model.architecture"]) == ["mobilenet_v2", "resnet18"]


def test_predict_names_a_mistyped_parameter_and_refuses_a_foreign_model(trained, tmp_path):
    project, name, path = trained
    typo = project.run("surrogate", "predict", "--study", name, "--params", "algorithm.cnov=gemm", timeout=600)
    assert typo.returncode == 2 and "algorithm.cnov" in typo.stderr and "algorithm.conv" in typo.stderr
    foreign = tmp_path / "plain.json"
    xgboost.XGBRegressor(n_estimators=2).fit([[0.0], [1.0]], [0.0, 1.0]).save_model(foreign)
    refused = project.run("surrogate", "predict", "--study", name, "--grid", "--model", str(foreign), timeout=600)
    assert refused.returncode == 1 and "without a dlas-dse feature schema" in refused.stderr
    missing = project.run("surrogate", "predict", "--study", name, "--grid", "--model", str(tmp_path / "no.json"))
    assert missing.returncode == 1 and "surrogate train" in missing.stderr


def test_evaluate_reports_held_out_metrics_and_plots(trained):
    project, name, _ = trained
    result = project.run("surrogate", "evaluate", "--study", name, "--folds", "4", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "leave-one-hardware-out: not computed: one device only" in result.stderr
    directory = project.root / "results" / "surrogate" / f"{name}-evaluation"
    metrics = pd.read_csv(directory / "metrics.csv").set_index("split")
    assert list(metrics.index) == ["k-fold", "leave-one-model-out"]
    assert set(metrics.columns) >= {"mape_percent", "within_10_percent", "within_20_percent", "kendall_tau",
                                    "r2_log_latency"}
    for split in metrics.index:
        predictions = pd.read_csv(directory / f"predictions_{split}.csv")
        # every trial predicted exactly once, by a model that was trained without it
        assert sorted(predictions["trial"]) == sorted(f"{name}#{n}" for n in range(8))
        assert (directory / f"predicted_vs_measured_{split}.png").stat().st_size > 20_000
    held_out = pd.read_csv(directory / "predictions_leave-one-model-out.csv")
    assert set(held_out["held_out"]) == {"mobilenet_v2", "resnet18"}


def test_held_out_predictions_come_from_models_that_never_saw_the_row(finished_study):
    """A model trained on a fold must not reproduce the held-out rows' latencies: shuffling the
    held-out labels cannot change its predictions."""
    from dlas_dse.surrogate.data import measured_trials
    from dlas_dse.surrogate.evaluation import held_out_predictions

    project, name = finished_study
    study = load_stored_study(str(project.root / "studies" / f"{name}.yaml"), project.storage + f"{name}.db")
    measured = measured_trials([study])
    first = held_out_predictions(measured, "leave-one-model-out", str(project.cache))
    resnet = [i for i, c in enumerate(measured.configs) if c["model.architecture"] == "resnet18"]
    for i in resnet:
        measured.latencies_ms[i] *= 1000  # the held-out group's own labels change ...
    second = held_out_predictions(measured, "leave-one-model-out", str(project.cache))
    resnet_rows = first["held_out"] == "resnet18"
    # ... and its predictions do not (only the other group's, trained on those labels, move)
    assert first.loc[resnet_rows, "predicted_ms"].tolist() == pytest.approx(
        second.loc[resnet_rows, "predicted_ms"].tolist())
    assert not first.loc[~resnet_rows, "predicted_ms"].tolist() == pytest.approx(
        second.loc[~resnet_rows, "predicted_ms"].tolist())


def test_hypervolume_matches_known_volumes_and_an_independent_implementation():
    from optuna._hypervolume import compute_hypervolume

    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([3.0, 3.0])) == pytest.approx(3.0)
    assert hypervolume(np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), np.array([2.0, 2.0, 2.0])) == pytest.approx(5.0)
    assert hypervolume(np.array([[5.0, 5.0, 5.0]]), np.array([2.0, 2.0, 2.0])) == 0.0  # beyond the reference
    rng = np.random.default_rng(0)
    for _ in range(5):
        points = rng.uniform(0, 1, size=(30, 3))
        assert hypervolume(points, np.ones(3) * 1.1) == pytest.approx(compute_hypervolume(points, np.ones(3) * 1.1))


def test_surrogate_search_measures_each_point_once_on_the_replayed_grid(finished_study):
    from dlas_dse.config import load_study
    from dlas_dse.surrogate.replay import MeasuredGrid, replay, trials_to_reach
    from dlas_dse.surrogate.sampler import SurrogateSampler

    project, name = finished_study
    config = load_study(str(project.root / "studies" / f"{name}.yaml"))
    grid = MeasuredGrid(load_stored_study(str(project.root / "studies" / f"{name}.yaml"), project.storage + f"{name}.db"))
    shares = replay(grid, config.space, SurrogateSampler(config.space, str(project.cache), 0, startup_trials=3), 8)
    # eight proposals, eight different points: the whole grid, hence its whole hypervolume
    assert len(shares) == 8 and shares[-1] == pytest.approx(1.0)
    assert shares == sorted(shares) and trials_to_reach(shares, 0.95) <= 8


def test_optimize_with_the_surrogate_sampler_runs_real_trials(finished_study):
    project, _ = finished_study
    project.write("studies", "searched", TINY_STUDY.format(space="finished", sampler="{name: surrogate, startup_trials: 2}",
                                                           n_trials=3, timeout=600))
    result = project.run("optimize", "--study", "searched", "--no-progress", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_stored_study(str(project.root / "studies" / "searched.yaml"), project.storage + "searched.db")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3 and len({json.dumps(t.params, sort_keys=True) for t in done}) == 3


def test_surrogate_sampler_needs_all_three_objectives(project):
    project.tiny("two-objectives", sampler="surrogate")
    path = project.root / "studies" / "two-objectives.yaml"
    path.write_text(path.read_text() + "objectives: {accuracy: maximize, latency_ms: minimize}\n")
    result = project.run("optimize", "--study", "two-objectives", timeout=300)
    assert result.returncode == 2 and "objectives" in result.stderr and "size_bytes" in result.stderr
