"""Grid mode: the paper's grid is planned without data (points per layer, shared stages), and the
command line can replace its datasets, models and devices."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dlas_dse.config import load_study
from dlas_dse.grid import plan_grid
from dlas_dse.stack.remote import free_port

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture
def in_repository(monkeypatch):
    monkeypatch.chdir(REPOSITORY)


def test_paper_grid_has_the_documented_points_and_shared_stages(in_repository):
    plan = plan_grid(load_study("dlas-paper").space)
    per_setting = 2 * 7 * 36 * 2  # datasets x models x (compression, algorithm, format) x tunings
    assert len(plan.points) == 7056 == per_setting * (3 * 2 + 1)  # three CPU platforms x 2 thread counts + a GPU
    assert plan.per_platform == {"host-cpu": 2 * per_setting, "x86-avx2": 2 * per_setting,
                                 "edge-arm": 2 * per_setting, "cuda": per_setting}
    # model: 7 architectures, each trained on cifar10 and pretrained for imagenet (epochs and weights per dataset);
    # compression: four techniques + weight pruning at four sparsities
    assert plan.per_layer == {"dataset": 2, "model": 14, "compression": 8, "algorithm": 6, "software": 2,
                              "hardware": 7}
    # threads do not change an untuned build (one target per platform), a tuned one is tuned at its threads:
    # untuned builds on 4 targets, tuned on 3 CPUs x 2 thread counts + the GPU; "none" needs no compression run
    untuned = per_setting // 2
    assert plan.stages == {"trainings": 14, "compressions": 14 * 7, "builds": 4 * untuned + 7 * untuned,
                           "tuning runs": 7 * untuned, "measurements": 7056}
    imagenet = [p for p in plan.points if p["dataset.name"] == "imagenet"]
    assert {(p["model.epochs"], p["model.weights"], p["dataset.train_samples"]) for p in imagenet} == {(0, "torchvision", 1000)}
    assert {point["compression.sparsity"] for point in plan.points
            if point["compression.technique"] == "weight_pruning"} == {0.5, 0.8, 0.9, 0.95}
    assert all(point["algorithm.format"] == "dense" or point["compression.technique"] == "weight_pruning"
               for point in plan.points)
    assert all(point["hardware.threads"] == 0 for point in plan.points if point["hardware.device"] == "cuda")
    assert len({tuple(sorted(point.items())) for point in plan.points}) == len(plan.points)


def test_overriding_the_datasets_drops_their_own_parameters(in_repository):
    plan = plan_grid(load_study("dlas-paper", {"dataset.name": "digits",
                                               "model.architecture": {"choices": ["resnet18", "mobilenet_v2"]}}).space)
    assert len(plan.points) == 2 * 36 * 2 * 7 and plan.stages["trainings"] == 2
    assert all("dataset.train_samples" not in point for point in plan.points)


def test_dry_run_plans_without_any_dataset(project):
    result = project.run("grid", "--study", str(REPOSITORY / "studies" / "dlas-paper.yaml"), "--dry-run",
                         "--data-dir", str(project.root / "no-data-here"))
    assert result.returncode == 0, result.stderr
    assert "7056 grid points" in result.stdout and "trainings         14" in result.stdout
    assert re.search(r"x86-avx2 +2016 +ready", result.stdout) and re.search(r"cuda +1008 +(ready|NOT REACHABLE)",
                                                                              result.stdout)
    assert not (project.root / "results").exists()  # nothing ran, no storage was created


def test_a_grid_with_platforms_out_of_reach_names_them_and_the_command_for_the_rest(project):
    env = {**project.env(), "DLAS_RPC_TRACKER": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(project.command("grid", "--study", str(REPOSITORY / "studies" / "dlas-paper-mini.yaml"),
                                            "--hardware", "host-cpu", "edge-arm"),
                            cwd=project.root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert re.search(r"edge-arm +288 +NOT REACHABLE: tracker", result.stdout)
    assert "platforms edge-arm cannot be reached" in result.stderr
    assert "--hardware host-cpu`" in result.stderr and "Traceback" not in result.stderr
    assert not (project.root / "results").exists()
