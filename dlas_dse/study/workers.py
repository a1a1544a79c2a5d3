"""Workers: which process runs which trial (host, process id, start time), the other live workers
on this host, and recovering the trials of workers that died or were stopped with Ctrl-C."""

from __future__ import annotations

import socket

import optuna
import psutil
from optuna.trial import TrialState

MAX_RETRIES = 2
"""How many times an interrupted trial is run again."""


def worker_identity() -> dict:
    """This process as a trial records its worker: host, process id and start time."""
    process = psutil.Process()
    return {"host": socket.gethostname(), "pid": process.pid, "started": process.create_time()}


def _is_alive(worker: dict) -> bool:
    try:
        return abs(psutil.Process(worker["pid"]).create_time() - worker["started"]) < 1.0
    except psutil.Error:
        return False


def workers_beside_us(study: optuna.Study) -> list[int]:
    """Process ids of other live workers running this study's trials on this host."""
    me = worker_identity()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sorted({worker["pid"] for trial in running if (worker := trial.user_attrs.get("worker"))
                   and worker["host"] == me["host"] and worker["pid"] != me["pid"] and _is_alive(worker)})


def recover_interrupted_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Enqueue again the trials that were interrupted rather than failed: those stopped with
    Ctrl-C, and running ones whose worker on this host is gone (these are marked failed first)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    recovered = []
    for trial in trials:
        worker = trial.user_attrs.get("worker") or {}
        if trial.state == TrialState.RUNNING and worker.get("host") == socket.gethostname() \
                and not _is_alive(worker):
            storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                        f"interrupted: worker process {worker['pid']} stopped mid-trial")
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        elif not (trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")):
            continue
        retries = trial.user_attrs.get("retries", 0)
        if trial.number not in retried and retries < MAX_RETRIES:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries + 1})
            recovered.append(trial.number)
    return recovered
