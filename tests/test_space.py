"""The space maps onto Optuna distributions, honours conditions and constraints, and enumerates."""

from __future__ import annotations

import optuna
import pytest

from dlas_dse.config import load_space

SPACE = """\
model:
  architecture: {choices: [resnet18, mobilenet_v2]}
  epochs: {range: [1, 9], step: 2}
  learning_rate: {range: [0.001, 0.1], log: true}
  batch_size: {choices: [32, 64], when: {model.architecture: resnet18}}
hardware:
  device: host-cpu
  threads: {choices: [1, 2]}
constraints:
  - name: mobilenet-single-thread
    if: {model.architecture: mobilenet_v2}
    then: {hardware.threads: [1]}
    reason: only to test constraints
"""


@pytest.fixture
def space(project):
    return load_space(str(project.write("search_spaces", "s", SPACE)))


def _sample(space, **fixed):
    """Sample ``space`` through a real Optuna trial whose ``fixed`` parameters are enqueued."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(fixed)
    trial = study.ask()
    return trial, space.sample(trial)


def test_parameters_map_to_optuna_distributions(space):
    trial, config = _sample(space, **{"model.architecture": "resnet18"})
    distributions = trial.distributions
    assert distributions["model.architecture"] == optuna.distributions.CategoricalDistribution(
        ["resnet18", "mobilenet_v2"])
    assert distributions["model.epochs"] == optuna.distributions.IntDistribution(1, 9, step=2)
    assert distributions["model.learning_rate"] == optuna.distributions.FloatDistribution(0.001, 0.1, log=True)
    assert distributions["model.batch_size"] == optuna.distributions.CategoricalDistribution([32, 64])
    # fixed values are part of the configuration but not sampled
    assert "hardware.device" not in distributions and config["hardware.device"] == "host-cpu"
    assert config["model.epochs"] in (1, 3, 5, 7, 9)
    assert 0.001 <= config["model.learning_rate"] <= 0.1


def test_conditional_parameter_only_when_its_condition_holds(space):
    trial, config = _sample(space, **{"model.architecture": "mobilenet_v2"})
    assert "model.batch_size" not in config and "model.batch_size" not in trial.distributions
    trial, config = _sample(space, **{"model.architecture": "resnet18"})
    assert config["model.batch_size"] in (32, 64)


def test_constraints_exclude_exactly_the_stated_combinations(space):
    base = {"model.architecture": "mobilenet_v2", "hardware.device": "host-cpu"}
    assert [c.name for c in space.violations({**base, "hardware.threads": 2})] == ["mobilenet-single-thread"]
    assert space.violations({**base, "hardware.threads": 1}) == []
    assert space.violations({**base, "model.architecture": "resnet18", "hardware.threads": 2}) == []


def test_grid_needs_steps_and_honours_conditions_and_constraints(project):
    discrete = SPACE.replace("learning_rate: {range: [0.001, 0.1], log: true}", "learning_rate: 0.05")
    space = load_space(str(project.write("search_spaces", "d", discrete)))
    points = list(space.grid())
    # resnet18: 5 epochs x 2 batch sizes x 2 threads; mobilenet_v2: 5 epochs x 1 thread (constraint)
    assert len(points) == 5 * 2 * 2 + 5 * 1
    assert all("model.batch_size" not in p for p in points if p["model.architecture"] == "mobilenet_v2")
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    with pytest.raises(ValueError, match="needs a 'step'"):
        list(load_space(str(project.write("search_spaces", "c", SPACE))).grid())
