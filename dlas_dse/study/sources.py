"""Where a study's trials come from: proposed by its sampler, or the grid's points enqueued once
each. The loop asks its source, so that it holds no branch per kind of study."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Callable

import optuna
from optuna.trial import TrialState

from dlas_dse.config import StudyConfig
from dlas_dse.distinct import DistinctSampler
from dlas_dse.grid import enqueue_grid
from dlas_dse.study.storage_lock import storage_lock
from dlas_dse.study.workers import recover_interrupted_trials


class TrialSource(ABC):
    """What the study loop asks about the trials it runs."""

    def sampler(self, sampler: optuna.samplers.BaseSampler, config: StudyConfig,
                storage: optuna.storages.BaseStorage, seed: int | None) -> optuna.samplers.BaseSampler:
        """The Optuna sampler the study runs with, given the registry's ``sampler``."""
        return sampler

    @abstractmethod
    def prepare(self, study: optuna.Study, storage: optuna.storages.BaseStorage, config: StudyConfig,
                n_trials: int | None) -> int:
        """Make the trials ready to run; returns how many finished trials the study aims at."""

    def nothing_left(self, study: optuna.Study) -> bool:
        """Whether nothing is left to run, now or once other workers finish (checked at the start)."""
        return False

    def nothing_waiting(self, study: optuna.Study) -> bool:
        """Whether no trial waits to be run (checked after each trial)."""
        return False

    def admits(self, storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> bool:
        """Whether ``trial``, as Optuna started it, is one to run."""
        return True

    def wait_for_more(self, study: optuna.Study, storage: optuna.storages.RDBStorage, deadline: float | None,
                      log: Callable[[str], None]) -> bool:
        """When the loop ran out of trials short of its target: wait for more; whether there are now."""
        return False


class SampledTrials(TrialSource):
    """Configurations the sampler proposes, each one distinct (:class:`DistinctSampler`, proposing
    under a lock on the storage so that processes sharing the study never propose the same one)."""

    def sampler(self, sampler: optuna.samplers.BaseSampler, config: StudyConfig,
                storage: optuna.storages.BaseStorage, seed: int | None) -> optuna.samplers.BaseSampler:
        return DistinctSampler(sampler, config.space, seed,
                               claim_lock=lambda: storage_lock(storage, f"dlas-propose-{config.name}"))

    def prepare(self, study: optuna.Study, storage: optuna.storages.BaseStorage, config: StudyConfig,
                n_trials: int | None) -> int:
        return n_trials or config.n_trials


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


class GridPoints(TrialSource):
    """Every valid point of the space once: enqueued as waiting trials, which workers take."""

    def prepare(self, study: optuna.Study, storage: optuna.storages.BaseStorage, config: StudyConfig,
                n_trials: int | None) -> int:
        return n_trials or enqueue_grid(study, storage, config.space)

    def nothing_left(self, study: optuna.Study) -> bool:
        return not _waiting(study) and not _running(study)

    def nothing_waiting(self, study: optuna.Study) -> bool:
        return not _waiting(study)

    def admits(self, storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> bool:
        """Only a waiting (enqueued or retried) trial, not one the sampler invented because another
        worker took the last point."""
        frozen = storage.get_trial(trial._trial_id)
        return bool(frozen.params) or "fixed_params" in frozen.system_attrs

    def wait_for_more(self, study: optuna.Study, storage: optuna.storages.RDBStorage, deadline: float | None,
                      log: Callable[[str], None]) -> bool:
        """With no grid point waiting, wait while other workers still run points: a worker that dies
        (on this host: seen at once; elsewhere: it stops sending heartbeats and its trial is failed
        after the grace period) has its point enqueued again, and this worker takes it."""
        announced = False
        while _running(study) and not _waiting(study):
            if deadline and time.monotonic() > deadline:
                return False
            if not announced:
                log(f"no grid point is waiting; {_running(study)} running on other workers - waiting for them "
                    "(a dead worker's point is retried here after the heartbeat grace period)")
                announced = True
            time.sleep(min(5.0, storage.get_heartbeat_interval() / 4))
            recover_interrupted_trials(study, storage)
            optuna.storages.fail_stale_trials(study)
        return _waiting(study) > 0


def trial_source(sampler: str) -> TrialSource:
    """The source of a study run with the sampler named ``sampler``."""
    return GridPoints() if sampler == "grid" else SampledTrials()
