"""Grid mode: the paper's grid is planned without data (points per layer, shared stages), and the
command line can replace its datasets, models and devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlas_dse.config import load_study
from dlas_dse.grid import plan_grid

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture
def in_repository(monkeypatch):
    monkeypatch.chdir(REPOSITORY)


def test_paper_grid_has_the_documented_points_and_shared_stages(in_repository):
    plan = plan_grid(load_study("dlas-paper").space)
    assert len(plan.points) == 1008 == 2 * 7 * 18 * 2 * 2
    assert plan.per_layer == {"dataset": 2, "model": 7, "compression": 5, "algorithm": 6, "software": 2,
                              "hardware": 2}
    # threads do not change a build; "none" needs no compression run
    assert plan.stages == {"trainings": 14, "compressions": 14 * 4, "builds": 1008 // 2, "tuning runs": 1008 // 4,
                           "measurements": 1008}
    assert all(point["algorithm.format"] == "dense" or point["compression.technique"] == "weight_pruning"
               for point in plan.points)
    assert len({tuple(sorted(point.items())) for point in plan.points}) == len(plan.points)


def test_overriding_the_datasets_drops_their_own_parameters(in_repository):
    plan = plan_grid(load_study("dlas-paper", {"dataset.name": "digits",
                                               "model.architecture": {"choices": ["resnet18", "mobilenet_v2"]}}).space)
    assert len(plan.points) == 2 * 18 * 2 * 2 and plan.stages["trainings"] == 2
    assert all("dataset.train_samples" not in point for point in plan.points)


def test_dry_run_plans_without_any_dataset(project):
    result = project.run("grid", "--study", str(REPOSITORY / "studies" / "dlas-paper.yaml"), "--dry-run",
                         "--data-dir", str(project.root / "no-data-here"))
    assert result.returncode == 0, result.stderr
    assert "1008 grid points" in result.stdout and "trainings         14" in result.stdout
    assert not (project.root / "results").exists()  # nothing ran, no storage was created
