"""Surrogate-assisted search: each new trial is the unmeasured configuration whose predicted
objectives add the most hypervolume to the front measured so far.

Latency comes from the XGBoost surrogate retrained on the trials so far; accuracy from the trials
that share the configuration's dataset, model and compression (accuracy does not depend on the
layers below them); size from the trials that share those and the weight format, else from the
static deployed-bytes estimate scaled to the sizes measured so far. The first ``startup_trials``
are unmeasured configurations drawn at random."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from dlas_dse.space import Config, SearchSpace, config_key
from dlas_dse.surrogate.descriptors import model_descriptors
from dlas_dse.surrogate.hypervolume import hypervolume, non_dominated, objective_space
from dlas_dse.surrogate.model import LatencySurrogate

ACCURACY_LAYERS = ("dataset", "model", "compression")
SIZE_LAYERS = ACCURACY_LAYERS + ("algorithm.format",)
MAX_CANDIDATES = 2000
RANDOM_DRAWS = 20000


def _group(config: Config, prefixes: tuple[str, ...]) -> str:
    return json.dumps({k: v for k, v in sorted(config.items()) if k.startswith(prefixes)}, default=str)


class SurrogateSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler for the study's three objectives (accuracy, latency_ms, size_bytes)."""

    def __init__(self, space: SearchSpace, cache_dir: str, seed: int | None = 0, startup_trials: int = 8):
        self.space, self.cache_dir, self.startup_trials = space, cache_dir, startup_trials
        self._rng = np.random.default_rng(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._chosen: dict[int, Config] = {}
        self._candidates: list[Config] | None = None

    # -- Optuna's sampler interface: everything is decided in before_trial
    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str,
                           distribution: optuna.distributions.BaseDistribution) -> Any:
        chosen = self._chosen.get(trial.number, {})
        if name in chosen:
            return chosen[name]
        return self._fallback.sample_independent(study, trial, name, distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        unmeasured = self._unmeasured(study)
        if unmeasured:
            self._chosen[trial.number] = self.choose(study, unmeasured)

    def after_trial(self, study, trial, state, values) -> None:
        self._chosen.pop(trial.number, None)

    # -- the choice
    def candidates(self) -> list[Config]:
        """Every valid configuration of the space when it has at most ``MAX_CANDIDATES``, else that
        many distinct valid ones drawn at random."""
        if self._candidates is None:
            self._candidates = self.space.grid_up_to(MAX_CANDIDATES)
            if self._candidates is None:
                self._candidates = self._random_candidates()
        return self._candidates

    def _random_candidates(self) -> list[Config]:
        found: dict[str, Config] = {}
        for _ in range(RANDOM_DRAWS):
            config = {}
            for parameter in self.space.parameters:
                if parameter.is_active(config):
                    config[parameter.name] = self._draw(parameter)
            if not self.space.violations(config):
                found.setdefault(config_key(config), config)
            if len(found) >= MAX_CANDIDATES:
                break
        return list(found.values())

    def _draw(self, parameter) -> Any:
        if parameter.discrete or parameter.integer or parameter.step:
            values = parameter.grid_values()
            return values[self._rng.integers(len(values))]
        if parameter.log:
            return float(np.exp(self._rng.uniform(np.log(parameter.low), np.log(parameter.high))))
        return float(self._rng.uniform(parameter.low, parameter.high))

    def _unmeasured(self, study: optuna.Study) -> list[Config]:
        """Candidates no trial has run, is running or is waiting to run."""
        taken = {config_key(t.user_attrs["config"]) for t in study.get_trials(deepcopy=False)
                 if "config" in t.user_attrs}
        taken |= {config_key(c) for c in self._chosen.values()}
        return [c for c in self.candidates() if config_key(c) not in taken]

    def choose(self, study: optuna.Study, unmeasured: list[Config]) -> Config:
        """The configuration to measure next."""
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if "config" in t.user_attrs and not t.user_attrs.get("emulated")]  # emulated latency: not the board's
        if len(done) < max(self.startup_trials, 2):
            return unmeasured[self._rng.integers(len(unmeasured))]
        predicted = self.predict(study, done, unmeasured)
        measured = objective_space(*zip(*[self._objectives(study, t) for t in done]))
        front = non_dominated(measured)
        everything = np.vstack([measured, predicted])
        reference = everything.max(axis=0) + 0.05 * (everything.max(axis=0) - everything.min(axis=0)) + 1e-9
        base = hypervolume(front, reference)
        gains = np.array([hypervolume(np.vstack([front, point]), reference) - base for point in predicted])
        if gains.max() <= 0:
            return unmeasured[self._rng.integers(len(unmeasured))]
        return unmeasured[int(np.argmax(gains))]

    @staticmethod
    def _objectives(study: optuna.Study, trial: FrozenTrial) -> tuple[float, float, float]:
        values = dict(zip(study.metric_names, trial.values))
        return values["accuracy"], values["latency_ms"], values["size_bytes"]

    def predict(self, study: optuna.Study, done: list[FrozenTrial], configs: list[Config]) -> np.ndarray:
        """Predicted (-accuracy, log latency, log size) of ``configs``."""
        observed = [(t.user_attrs["config"], *self._objectives(study, t)) for t in done]
        latency = LatencySurrogate.train([row[0] for row in observed], [row[2] for row in observed],
                                         self.cache_dir).predict(configs, self.cache_dir)
        accuracy = self._group_mean(observed, configs, ACCURACY_LAYERS, 1)
        size = self._group_mean(observed, configs, SIZE_LAYERS, 3)
        estimate = np.array([np.exp(model_descriptors(c)["log_deployed_bytes"]) for c in configs])
        measured_ratio = np.median([row[3] / np.exp(model_descriptors(row[0])["log_deployed_bytes"])
                                    for row in observed])
        size = np.where(np.isnan(size), estimate * measured_ratio, size)
        accuracy = np.where(np.isnan(accuracy), np.mean([row[1] for row in observed]), accuracy)
        return objective_space(accuracy, latency, size)

    @staticmethod
    def _group_mean(observed: list[tuple], configs: list[Config], prefixes: tuple[str, ...], column: int) -> np.ndarray:
        groups: dict[str, list[float]] = {}
        for row in observed:
            groups.setdefault(_group(row[0], prefixes), []).append(row[column])
        return np.array([np.mean(groups[key]) if (key := _group(c, prefixes)) in groups else np.nan for c in configs])
