"""Budgets every worker of a study shares: the number of trials, and the seconds of auto-tuning."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from dlas_dse.stack.tuning import TuningAllowance
from dlas_dse.study.storage_lock import storage_lock


def counted_trials(study: optuna.Study) -> int:
    """Finished trials that count towards the budget: complete or failed, except failures that
    were retried (a killed worker's trial) and combinations excluded by constraints."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial")) for t in trials}
    retried |= {t.number for t in trials if t.user_attrs.get("interrupted")}
    return sum(1 for t in trials if t.state == TrialState.COMPLETE
               or (t.state == TrialState.FAIL and t.number not in retried))


BUDGET_CLAIM = "claimed_budget"
"""A running trial's attribute: it holds one of the study's trials, whichever process runs it."""


def claim_budget(study: optuna.Study, storage: optuna.storages.BaseStorage, trial: optuna.Trial,
                 target: int) -> bool:
    """Whether ``trial`` may run within the budget of ``target`` trials shared by every process on
    the study - the finished trials that count plus the running ones that claimed a place before -,
    claiming its place if so; counted and claimed under the storage's lock, so the budget holds
    on any storage however many processes run the study."""
    with storage_lock(storage, f"dlas-budget-{study.study_name}"):
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        claimed = sum(1 for t in running if t.user_attrs.get(BUDGET_CLAIM) and t.number != trial.number)
        if counted_trials(study) + claimed >= target:
            return False
        trial.set_user_attr(BUDGET_CLAIM, True)
        return True


def tuning_spent_s(study: optuna.Study) -> float:
    """Seconds of auto-tuning the study's finished trials spent (what its tuning cap counts)."""
    return sum(trial.user_attrs.get("time_tune_s", 0.0)
               for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))


def tuning_allowance(settings: dict, study: optuna.Study) -> TuningAllowance:
    """The study's tuning cap and what its finished trials spent of it (counted only under a cap)."""
    cap = settings["tuning"]["max_total_s"]
    return TuningAllowance(cap, tuning_spent_s(study) if cap is not None else 0.0)
