"""No configuration is measured twice: a sampler wrapper that swaps a proposal already measured
(or being measured by another worker) for one that is not.

Why a wrapping sampler: Optuna fixes a trial's parameters as they are suggested, so once the
objective sees a duplicate it can only prune that trial and enqueue another point (a wasted trial
per duplicate, and the point is no longer the sampler's choice). The wrapper decides before the
first suggestion instead: in ``before_trial`` it lets the real sampler propose a whole configuration
(``_Probe`` replays Optuna's suggest path: relative sample, else independent sample), asks again
up to ``resamples`` times while the proposal is taken, then falls back to a random unmeasured point
of the enumerated space when the space is finite; every suggestion of the trial then returns that
configuration. The real sampler keeps its own state (NSGA-II generations, TPE's history, the
surrogate's choice), so any Optuna sampler can be wrapped. Trials with fixed parameters (enqueued:
grid points, retries of interrupted trials) pass through untouched. Proposing and claiming happen
under ``claim_lock`` (a lock on the study's storage): the proposal is written as the trial's
``config`` attribute before the lock is released, so processes sharing a study never propose the
same configuration at the same moment.

What cannot be avoided is reported in the trial's :class:`Proposal`: a finite space whose every
valid configuration is measured (or running elsewhere) is ``exhausted``; a repeat the sampler
insists on in a space too large to enumerate carries ``repeat_of``, the complete trial whose
results answer it.
"""

from __future__ import annotations

import contextlib
import functools
import random
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from dlas_dse.space import Config, SearchSpace, config_key

RESAMPLES = 10
"""How many times the real sampler is asked again when its proposal is taken."""
MAX_ENUMERATED = 10_000
"""A space with more valid configurations than this is treated as infinite (resampling only)."""


@dataclass(frozen=True)
class Proposal:
    """What :class:`DistinctSampler` decided for one trial."""

    config: Config | None = None
    """The configuration every suggestion of the trial returns (None when exhausted)."""
    repeat_of: FrozenTrial | None = None
    """The complete trial with the same configuration, when the repeat could not be avoided."""
    exhausted: str | None = None
    """Why nothing is left to measure, when every configuration of a finite space is taken."""


def taken_configurations(study: optuna.Study) -> tuple[dict[str, FrozenTrial], set[str]]:
    """(config key → the first complete trial with that configuration, keys of configurations that
    running trials - other workers' - are measuring now)."""
    complete: dict[str, FrozenTrial] = {}
    running: set[str] = set()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if "config" not in trial.user_attrs:
            continue
        key = config_key(trial.user_attrs["config"])
        if trial.state == TrialState.COMPLETE:
            complete.setdefault(key, trial)
        else:
            running.add(key)
    return complete, running


class _Probe:
    """Stands in for the Optuna trial while a sampler proposes a configuration: ``space.sample``
    asks it for each active parameter and it answers as ``optuna.Trial`` does (a single-valued
    distribution's value, the sampler's relative sample when it covers the parameter with the same
    distribution, else its independent sample), storing nothing."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, study: optuna.Study, trial: FrozenTrial):
        self.sampler, self.study, self.trial = sampler, study, trial
        self.search_space = sampler.infer_relative_search_space(study, trial)
        self.relative = sampler.sample_relative(study, trial, self.search_space)

    def suggest_categorical(self, name: str, choices: list) -> Any:
        return self._suggest(name, CategoricalDistribution(choices))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._suggest(name, IntDistribution(low, high, log=log, step=step))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self._suggest(name, FloatDistribution(low, high, log=log, step=step))

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if distribution.single():
            return distribution.choices[0] if isinstance(distribution, CategoricalDistribution) else distribution.low
        if name in self.relative and self.search_space.get(name) == distribution:
            return self.relative[name]
        return self.sampler.sample_independent(self.study, self.trial, name, distribution)


class DistinctSampler(optuna.samplers.BaseSampler):
    """Wraps ``sampler`` so that a trial measures a configuration no complete or running trial of
    the study has (see the module docstring for how, and :class:`Proposal` for what could not be
    avoided)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, space: SearchSpace, seed: int | None = None,
                 resamples: int = RESAMPLES, claim_lock: Callable[[], ContextManager] = contextlib.nullcontext):
        self.sampler, self.space, self.resamples, self.claim_lock = sampler, space, resamples, claim_lock
        self._rng = random.Random(seed)
        self._proposals: dict[int, Proposal] = {}

    @functools.cached_property
    def grid(self) -> dict[str, Config] | None:
        """Config key → configuration for every valid configuration of a finite space, else None."""
        configs = self.space.grid_up_to(MAX_ENUMERATED)
        return None if configs is None else {config_key(config): config for config in configs}

    def proposal(self, number: int) -> Proposal | None:
        """The decision for trial ``number`` (None for a trial with fixed parameters)."""
        return self._proposals.get(number)

    def exhausted(self, study: optuna.Study) -> str | None:
        """Why nothing is left to measure - every valid configuration of a finite space is measured
        or being measured by another worker - or None."""
        return self._exhaustion(*taken_configurations(study))

    def _exhaustion(self, complete: dict[str, FrozenTrial], running: set[str]) -> str | None:
        """:meth:`exhausted` from the keys of complete and running configurations."""
        if self.grid is None:
            return None
        measured = len(self.grid.keys() & complete.keys())
        busy = len(self.grid.keys() & running - complete.keys())
        if measured + busy < len(self.grid):
            return None
        elsewhere = f", {busy} being measured by other workers" if busy else ""
        return f"the space is exhausted: {measured} of {len(self.grid)} configurations measured{elsewhere}"

    def propose(self, study: optuna.Study, trial: FrozenTrial) -> Proposal:
        """The real sampler's proposal when it is not taken (asking up to ``resamples`` times), else
        a random untaken configuration of a finite space, else exhaustion or an unavoidable repeat."""
        complete, running = taken_configurations(study)
        taken = complete.keys() | running
        for _ in range(self.resamples):
            config = self.space.sample(_Probe(self.sampler, study, trial))
            if config_key(config) not in taken:
                return Proposal(config)
        if self.grid is not None:
            free = [config for key, config in self.grid.items() if key not in taken]
            return Proposal(self._rng.choice(free)) if free else Proposal(exhausted=self._exhaustion(complete, running))
        return Proposal(config, repeat_of=complete.get(config_key(config)))

    # -- Optuna's sampler interface: the configuration is decided in before_trial
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        proposal = self._proposals.get(trial.number)
        if proposal is not None and proposal.config is not None and param_name in proposal.config:
            return proposal.config[param_name]
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)
        if "fixed_params" in trial.system_attrs:
            return
        with self.claim_lock():
            proposal = self.propose(study, trial)
            if proposal.config is not None and proposal.repeat_of is None:  # claimed: running with it
                study._storage.set_trial_user_attr(trial._trial_id, "config", proposal.config)
        self._proposals[trial.number] = proposal

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self._proposals.pop(trial.number, None)
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
        self._rng.seed()
