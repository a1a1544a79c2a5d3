"""The optimisation loop: :func:`run_study` runs (or resumes) a study; :class:`Objective` is one
trial of it, from the configuration to the stored objectives."""

from __future__ import annotations

import itertools
import time
from typing import Callable

import optuna
from optuna.trial import TrialState

from dlas_dse.config import StudyConfig
from dlas_dse.distinct import DistinctSampler, Proposal
from dlas_dse.registry import LAYERS
from dlas_dse.space import SearchSpace, config_key, nest
from dlas_dse.study.budget import claim_budget, counted_trials, tuning_allowance
from dlas_dse.study.opening import open_storage, open_study, storage_source
from dlas_dse.study.progress import Progress, summary
from dlas_dse.study.sources import TrialSource, trial_source
from dlas_dse.study.storage import check_storage
from dlas_dse.study.workers import recover_interrupted_trials, worker_identity, workers_beside_us
from dlas_dse.trial import STAGES, TrialFailure, run_trial, start_worker_server

MAX_EXCLUDED_IN_A_ROW = 200
"""Stop when the sampler keeps proposing combinations the space's constraints exclude."""


TRAINING_SIDE = ("dataset.name", "model.architecture", "compression.technique")
"""Selectors whose combination decides what a trial loads, trains and calibrates on: the dataset
and model checks run for each combination (ImageNet + int8 needs train/, ImageNet + resnet50 its weights)."""


def _checked_configurations(space: SearchSpace, layer: str, selector: str) -> list[dict]:
    """The configurations a layer's checks run on: one per value of its selector, or for the
    dataset and model layers one per combination of the :data:`TRAINING_SIDE` selectors."""
    names = TRAINING_SIDE if selector in TRAINING_SIDE[:2] else (selector,)
    names = tuple(n for n in names if any(p.name == n for p in space.parameters))
    combinations = itertools.product(*(space.parameter(n).values for n in names))
    unique = {config_key(c): c for c in (space.representative(**dict(zip(names, values))) for values in combinations)}
    return [nest(c) for c in unique.values()]


def preflight(space: SearchSpace) -> None:
    """Run every selectable technique's preflight check (data present, weights there, device
    reachable) so a study stops before any training when it cannot run; raises PreflightError."""
    for layer, registry in LAYERS.items():
        for layers in _checked_configurations(space, layer, f"{layer}.{registry.selector}"):
            for check in (registry.get(layers[layer][registry.selector]).preflight, registry.preflight):
                if check is not None:
                    check(layers)


NOT_COPIED = ("worker", "retry_of", "retries")
"""Attributes about a trial itself, not its configuration's results: a repeat does not copy them."""


def _answer_from_storage(trial: optuna.Trial, original: optuna.trial.FrozenTrial) -> tuple[float, ...]:
    """Complete ``trial``, an unavoidable repeat of ``original``'s configuration, with the values and
    attributes ``original`` measured (its ``time_*`` made zero: nothing ran), marked ``repeat_of``."""
    for key, value in original.user_attrs.items():
        if key not in NOT_COPIED:
            trial.set_user_attr(key, 0.0 if key.startswith("time_") else value)
    trial.set_user_attr("repeat_of", original.number)
    return tuple(original.values)


class Objective:
    """One trial of the study, called by Optuna: take the budget, sample (or take the grid point),
    check the constraints, run the configuration in a child process and store its attributes;
    :meth:`after_trial` reports it and stops the study when it is done."""

    def __init__(self, config: StudyConfig, study: optuna.Study, storage: optuna.storages.BaseStorage,
                 source: TrialSource, target: int):
        self.config, self.study, self.storage, self.source, self.target = config, study, storage, source, target
        self.bar: Progress | None = None  # set when the loop starts
        self.distinct = study.sampler if isinstance(study.sampler, DistinctSampler) else None
        self.exhausted = self.distinct.exhausted(study) if self.distinct else None
        self.excluded_in_a_row = 0

    def _stop(self, trial: optuna.Trial, attribute: str, reason: str) -> None:
        trial.set_user_attr(attribute, True)
        self.study.stop()
        raise optuna.TrialPruned(reason)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        if not self.source.admits(self.storage, trial):  # another worker took the last point
            self._stop(trial, "no_grid_point_left", "no grid point was left to run")
        if not claim_budget(self.study, self.storage, trial, self.target):  # other processes took the rest
            self._stop(trial, "over_budget", f"the budget of {self.target} trials is taken by finished and "
                       "running trials")
        trial.set_user_attr("worker", worker_identity())
        proposal: Proposal | None = self.distinct.proposal(trial.number) if self.distinct else None
        if proposal and proposal.exhausted:  # other workers took the last configurations meanwhile
            self.exhausted = proposal.exhausted
            self._stop(trial, "space_exhausted", proposal.exhausted)
        sampled = self.config.space.sample(trial)
        trial.set_user_attr("config", sampled)
        excluded = self.config.space.violations(sampled)
        if excluded:
            self.excluded_in_a_row += 1
            trial.set_user_attr("excluded_by", [c.name for c in excluded])
            raise optuna.TrialPruned(f"excluded by constraint {excluded[0].name}")
        self.excluded_in_a_row = 0
        if proposal and proposal.repeat_of is not None:
            return _answer_from_storage(trial, proposal.repeat_of)
        return self._run(trial, sampled)

    def _run(self, trial: optuna.Trial, sampled: dict) -> tuple[float, ...]:
        self.bar.start(trial.number, sampled)
        started = time.perf_counter()
        try:
            result = run_trial(sampled, self.config.settings, self.config.cache_dir, self.config.trial_timeout_s,
                               tuning_allowance(self.config.settings, self.study), self.bar.stage)
        except TrialFailure as failure:
            trial.set_user_attr("fail_reason", str(failure))
            trial.set_user_attr("time_trial_s", time.perf_counter() - started)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (Ctrl-C); retried on resume")
            trial.set_user_attr("interrupted", True)
            raise
        wall = time.perf_counter() - started
        attributes = result.attributes
        staged = sum(attributes.get(f"time_{stage}_s", 0.0) for stage in STAGES)
        attributes.update(time_trial_s=wall,
                          time_framework_s=wall - staged - attributes["time_worker_start_s"])
        for key, value in attributes.items():
            trial.set_user_attr(key, value)
        return tuple(result.values[name] for name in self.config.objectives)

    @property
    def sampler_gave_up(self) -> bool:
        """Whether the sampler kept proposing excluded combinations."""
        return self.excluded_in_a_row >= MAX_EXCLUDED_IN_A_ROW

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Report ``trial`` under the progress bar; stop the study when its target is reached or
        nothing is left to run."""
        counted = counted_trials(study)
        settings = ", ".join(f"{name.split('.')[-1]}={value}" for name, value in trial.params.items())
        label = f"trial {trial.number} ({settings})"
        if trial.state == TrialState.COMPLETE and "repeat_of" in trial.user_attrs:
            self.bar.finish(f"{label} repeats trial {trial.user_attrs['repeat_of']}: answered from storage, "
                            "nothing measured (counts towards the budget)", counted)
        elif trial.state == TrialState.COMPLETE:
            self.bar.finish(f"{label} done in {trial.user_attrs['time_trial_s']:.1f} s: "
                            f"{summary(dict(zip(self.config.objectives, trial.values)))}", counted)
        elif trial.state == TrialState.FAIL:
            self.bar.finish(f"{label} FAILED: {trial.user_attrs.get('fail_reason', '')}", counted)
        if self.distinct and not self.exhausted:
            self.exhausted = self.distinct.exhausted(study)
        if counted >= self.target or self.exhausted or self.sampler_gave_up or self.source.nothing_waiting(study):
            study.stop()


def run_study(config: StudyConfig, n_trials: int | None = None, storage_url: str | None = None,
              sampler: str | None = None, timeout_s: float | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume) the study until ``n_trials`` trials count as finished, or ``timeout_s``."""
    sampler = sampler or config.sampler
    source = trial_source(sampler)
    check_storage(storage_url or config.storage, *storage_source(config, storage_url), create=True)
    preflight(config.space)
    start_worker_server()
    storage = open_storage(storage_url or config.storage, **config.settings["workers"])
    study = open_study(config, storage, source, sampler)
    recovered = recover_interrupted_trials(study, storage)
    if recovered:
        log(f"resuming: trials {recovered} were interrupted when a worker stopped; they are retried")
    beside = workers_beside_us(study)
    if beside:
        log(f"warning: worker process(es) {beside} already run this study on this machine; their measurements "
            "and this one's compete for the same cores (slower, and wrong latencies). Run one worker per machine.")
    target = source.prepare(study, storage, config, n_trials)
    done = counted_trials(study)
    objective = Objective(config, study, storage, source, target)
    if done >= target or objective.exhausted or source.nothing_left(study):
        log(f"study {config.name!r} already has {done} finished trials (target {target})"
            f"{f'; {objective.exhausted}' if objective.exhausted else ''}; nothing to run")
        return study

    objective.bar = Progress(target, done, progress)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        while True:
            left = deadline - time.monotonic() if deadline else None
            study.optimize(objective, timeout=left, catch=(TrialFailure,), callbacks=[objective.after_trial])
            if objective.sampler_gave_up or counted_trials(study) >= target \
                    or not source.wait_for_more(study, storage, deadline, log):
                break
    finally:
        objective.bar.bar.close()
    if objective.sampler_gave_up:
        log(f"stopped: the sampler proposed {objective.excluded_in_a_row} excluded combinations in a row")
    if objective.exhausted and counted_trials(study) < target:
        log(f"stopped after {counted_trials(study)} of {target} trials: {objective.exhausted}")
    return study
