"""No configuration is measured twice: DistinctSampler with Optuna in memory, and run_study with a
made-up measurement instead of a trial (no model is built)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.trial import TrialState

from dlas_dse.distinct import DistinctSampler, Proposal
from dlas_dse.objectives import OBJECTIVES
from dlas_dse.space import Parameter, SearchSpace, config_key
TWO_BY_TWO = SearchSpace("two-by-two", "test", [  # the quickstart's shape: 2 models x 2 thread counts
    Parameter("dataset.name", "fixed", ("digits",)),
    Parameter("model.architecture", "choices", ("resnet18", "mobilenet_v2")),
    Parameter("hardware.threads", "choices", (1, 2)),
])
CONTINUOUS = SearchSpace("continuous", "test", [Parameter("model.learning_rate", "range", low=0.01, high=0.1)])


class Stubborn(optuna.samplers.BaseSampler):
    """Proposes every parameter's first value, whatever was measured."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if isinstance(param_distribution, optuna.distributions.CategoricalDistribution):
            return param_distribution.choices[0]
        return param_distribution.low


def made_up_values(config: dict) -> list[float]:
    """Objectives that depend on the configuration, without measuring anything."""
    big = config.get("model.architecture") == "resnet18"
    return [0.9 if big else 0.8, 10.0 / config.get("hardware.threads", 1), 4e7 if big else 9e6]


def new_study(sampler: optuna.samplers.BaseSampler, space: SearchSpace) -> optuna.Study:
    study = optuna.create_study(directions=list(OBJECTIVES.values()),
                                sampler=DistinctSampler(sampler, space, seed=0))
    study.set_metric_names(list(OBJECTIVES))
    return study


def ask(study: optuna.Study, space: SearchSpace) -> tuple[optuna.Trial, Proposal | None, dict | None]:
    """A new trial, its proposal and (unless the space is exhausted) its configuration, sampled and
    recorded as run_study's objective does."""
    trial = study.ask()
    proposal = study.sampler.proposal(trial.number)
    if proposal is not None and proposal.exhausted:
        return trial, proposal, None
    config = space.sample(trial)
    trial.set_user_attr("config", config)
    return trial, proposal, config


def measure(study: optuna.Study, space: SearchSpace, n: int) -> list[Proposal | None]:
    """Run up to ``n`` trials with made-up objectives, stopping at exhaustion; their proposals."""
    proposals = []
    for _ in range(n):
        trial, proposal, config = ask(study, space)
        proposals.append(proposal)
        if config is None:
            study.tell(trial, state=TrialState.PRUNED)
            break
        study.tell(trial, made_up_values(config))
    return proposals


def complete_configs(study: optuna.Study) -> list[str]:
    return [config_key(t.user_attrs["config"]) for t in study.get_trials(states=(TrialState.COMPLETE,))]


@pytest.mark.parametrize("name", ["nsga2", "tpe", "random", "surrogate"])
def test_every_configuration_is_measured_once_then_the_space_is_exhausted(name, tmp_path):
    from dlas_dse.surrogate.sampler import SurrogateSampler

    sampler = {"nsga2": lambda: optuna.samplers.NSGAIISampler(seed=0, population_size=4),
               "tpe": lambda: optuna.samplers.TPESampler(seed=0),
               "random": lambda: optuna.samplers.RandomSampler(seed=0),
               "surrogate": lambda: SurrogateSampler(TWO_BY_TWO, str(tmp_path), seed=0)}[name]()
    study = new_study(sampler, TWO_BY_TWO)
    proposals = measure(study, TWO_BY_TWO, 6)
    assert sorted(complete_configs(study)) == sorted(config_key(c) for c in TWO_BY_TWO.grid())
    assert proposals[-1].exhausted == "the space is exhausted: 4 of 4 configurations measured"
    assert all(p.repeat_of is None for p in proposals)


def test_a_sampler_that_insists_falls_back_to_an_unmeasured_point_of_a_finite_space():
    study = new_study(Stubborn(), TWO_BY_TWO)
    measure(study, TWO_BY_TWO, 4)
    assert len(set(complete_configs(study))) == 4
    assert study.sampler.exhausted(study) == "the space is exhausted: 4 of 4 configurations measured"


def test_configurations_running_on_other_workers_are_not_proposed():
    study = new_study(optuna.samplers.RandomSampler(seed=0), TWO_BY_TWO)
    running = [ask(study, TWO_BY_TWO)[2] for _ in range(3)]  # asked, never told: still running
    assert len({config_key(c) for c in running}) == 3
    measure(study, TWO_BY_TWO, 1)
    assert complete_configs(study)[0] not in {config_key(c) for c in running}
    _, proposal, _ = ask(study, TWO_BY_TWO)
    assert proposal.exhausted == ("the space is exhausted: 1 of 4 configurations measured, "
                                  "3 being measured by other workers")


def test_an_unavoidable_repeat_in_a_continuous_space_points_at_the_measured_trial():
    study = new_study(Stubborn(), CONTINUOUS)
    measure(study, CONTINUOUS, 1)
    assert study.sampler.grid is None and study.sampler.exhausted(study) is None
    _, proposal, config = ask(study, CONTINUOUS)
    assert proposal.repeat_of.number == 0 and config == proposal.repeat_of.user_attrs["config"]


def test_a_continuous_space_is_resampled_away_from_measured_values():
    study = new_study(optuna.samplers.RandomSampler(seed=0), CONTINUOUS)
    measure(study, CONTINUOUS, 5)
    assert len(set(complete_configs(study))) == 5


def test_enqueued_trials_pass_through_even_when_measured():
    study = new_study(optuna.samplers.RandomSampler(seed=0), TWO_BY_TWO)
    measure(study, TWO_BY_TWO, 1)
    measured = study.trials[0].params
    study.enqueue_trial(measured)
    trial, proposal, _ = ask(study, TWO_BY_TWO)
    assert proposal is None and trial.params == measured


@pytest.fixture
def quickstart(tmp_path, monkeypatch):
    """The quickstart study in a temporary storage, its trials answered by ``made_up_values``;
    returns (config, storage URL, the configurations "measured")."""
    import dlas_dse.study.loop as study_module
    from dlas_dse.config import load_study
    from dlas_dse.trial import TrialResult

    measured = []

    def run_trial(config, settings, cache_dir, timeout_s, allowance, on_stage):
        measured.append(config)
        return TrialResult(dict(zip(OBJECTIVES, made_up_values(config))), {"time_worker_start_s": 0.0})

    monkeypatch.setattr(study_module, "run_trial", run_trial)
    monkeypatch.setattr(study_module, "preflight", lambda space: None)
    monkeypatch.setattr(study_module, "start_worker_server", lambda: None)
    return load_study("quickstart"), f"sqlite:///{tmp_path}/quickstart.db", measured


def test_the_quickstart_measures_its_four_configurations_and_stops(quickstart):
    from dlas_dse.study.loop import run_study

    config, storage, measured = quickstart
    assert config.n_trials == len(list(config.space.grid())) == 4  # the shipped budget: each configuration once
    config, logs = dataclasses.replace(config, n_trials=6), []  # a budget beyond the space
    study = run_study(config, storage_url=storage, progress=False, log=logs.append)
    assert len(measured) == 4 and len({config_key(c) for c in measured}) == 4
    assert sorted(complete_configs(study)) == sorted(config_key(c) for c in config.space.grid())
    assert logs[-1] == "stopped after 4 of 6 trials: the space is exhausted: 4 of 4 configurations measured"
    run_study(config, storage_url=storage, progress=False, log=logs.append)
    assert "the space is exhausted: 4 of 4 configurations measured; nothing to run" in logs[-1]
    assert len(measured) == 4


def test_unavoidable_repeats_are_answered_from_storage(quickstart, monkeypatch, capsys):
    from dlas_dse import distinct
    from dlas_dse.study.loop import run_study

    monkeypatch.setattr(distinct, "MAX_ENUMERATED", 0)  # as if the space were too large to enumerate
    config, storage, measured = quickstart
    study = run_study(dataclasses.replace(config, n_trials=8), storage_url=storage, progress=False, log=print)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    originals = [t for t in trials if "repeat_of" not in t.user_attrs]
    assert len(trials) == 8 and len(originals) == len(measured) == 4 and len(repeats) == 4
    assert len({config_key(t.user_attrs["config"]) for t in originals}) == 4
    for repeat in repeats:
        original = study.trials[repeat.user_attrs["repeat_of"]]
        assert repeat.user_attrs["config"] == original.user_attrs["config"] and repeat.values == original.values
        assert repeat.user_attrs["time_trial_s"] == 0.0
    assert capsys.readouterr().out.count("answered from storage, nothing measured") == 4


MADE_UP_STUDY = """\
import dataclasses, sys, time
import dlas_dse.study.loop as study_module
from dlas_dse.config import load_study
from dlas_dse.space import Parameter, SearchSpace
from dlas_dse.trial import TrialResult

def run_trial(config, settings, cache_dir, timeout_s, allowance, on_stage):
    time.sleep(0.3)
    values = [0.8, 10 * config["model.learning_rate"], 9e6]
    return TrialResult(dict(zip(["accuracy", "latency_ms", "size_bytes"], values)), {"time_worker_start_s": 0.0})

study_module.run_trial, study_module.preflight = run_trial, lambda space: None
study_module.start_worker_server = lambda: None
space = SearchSpace("continuous", "test", [Parameter("model.learning_rate", "range", low=0.01, high=0.1)])
config = dataclasses.replace(load_study("quickstart"), space=space, sampler=sys.argv[2],
                             sampler_options={}, n_trials=int(sys.argv[3]))
study_module.run_study(config, storage_url=sys.argv[1], progress=False)
"""


def run_made_up_studies(storage: str, sampler: str, n_trials: int, processes: int) -> None:
    """``processes`` processes running one study on ``storage`` at once, each trial answered by a
    made-up measurement of 0.3 s (real storage, samplers and processes; no model built)."""
    import subprocess
    import sys

    started = [subprocess.Popen([sys.executable, "-c", MADE_UP_STUDY, storage, sampler, str(n_trials)])
               for _ in range(processes)]
    assert [process.wait(timeout=300) for process in started] == [0] * processes


@pytest.mark.parametrize("sampler, server", [("random", "sqlite"), ("tpe", "sqlite"), ("random", "postgresql")])
def test_two_processes_on_one_study_share_its_budget_and_never_measure_one_configuration_twice(
        sampler, server, tmp_path, request):
    storage = request.getfixturevalue("database") if server == "postgresql" else f"sqlite:///{tmp_path}/shared.db"
    run_made_up_studies(storage, sampler, n_trials=6, processes=2)
    study = optuna.load_study(study_name="quickstart", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    assert len(set(complete_configs(study))) == 6
    assert not any("repeat_of" in t.user_attrs for t in complete)
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2  # both processes ran trials


def test_a_resumed_study_continues_the_search_instead_of_replaying_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/resumed.db"
    run_made_up_studies(storage, "random", n_trials=12, processes=1)  # then "crashes": a new process resumes
    run_made_up_studies(storage, "random", n_trials=24, processes=1)
    study = optuna.load_study(study_name="quickstart", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 24 and len(set(complete_configs(study))) == 24
    assert not any("repeat_of" in t.user_attrs for t in complete)  # replaying the seed's sequence repeats


def test_a_resumed_process_derives_its_seed_from_the_study_and_what_it_holds():
    from dlas_dse.study.opening import sampler_seed

    assert sampler_seed(0, 0) == 0 and sampler_seed(None, 5) is None
    assert len({sampler_seed(0, n) for n in range(1, 50)} | {0}) == 50
    assert sampler_seed(0, 7) == sampler_seed(0, 7) != sampler_seed(1, 7)
