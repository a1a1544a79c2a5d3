"""Optuna study orchestration: samplers, storage, resume after a crash, the optimisation loop.

A study lives in any SQLAlchemy storage (SQLite file by default). Rerunning the same command
resumes it: finished trials are kept, and a trial interrupted by a killed worker is marked failed
(immediately when the worker ran on this host, after the heartbeat grace period otherwise) and
enqueued again.
"""

from __future__ import annotations

import socket
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Callable

import optuna
import psutil
import sqlalchemy
from optuna.trial import TrialState
from tqdm import tqdm

from dlas_dse.config import SETTINGS, ConfigError, StudyConfig
from dlas_dse.distinct import DistinctSampler, Proposal
from dlas_dse.grid import enqueue_grid
from dlas_dse.registry import LAYERS
from dlas_dse.samplers import SAMPLERS
from dlas_dse.space import SearchSpace, nest
from dlas_dse.storage import check_storage, mask_url
from dlas_dse.storage_lock import storage_lock
from dlas_dse.trial import (STAGES, TrialFailure, run_trial, start_worker_server,
                            use_thread_lock_for_progress_bars)

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)

HEARTBEAT_INTERVAL_S = SETTINGS["workers"]["heartbeat_interval_s"].default
GRACE_PERIOD_S = SETTINGS["workers"]["grace_period_s"].default
MAX_RETRIES = 2
SCHEMA_ATTEMPTS = 5
MAX_EXCLUDED_IN_A_ROW = 200
"""Stop when the sampler keeps proposing combinations the space's constraints exclude."""


def make_sampler(study: StudyConfig, name: str | None = None,
                 storage: optuna.storages.BaseStorage | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in the study (or ``name``), seeded for this process (see
    :func:`sampler_seed`); every sampler but the grid's (whose points are enqueued once each) is
    wrapped in :class:`DistinctSampler`, so no configuration is measured twice, and proposes under
    a lock on ``storage``, so processes sharing the study never propose the same one at once."""
    name = name or study.sampler
    seed = sampler_seed(study.seed, stored_trials(storage, study.name) if storage else 0)
    sampler = _named_sampler(study, name, seed)
    if name == "grid":
        return sampler
    return DistinctSampler(sampler, study.space, seed,
                           claim_lock=lambda: storage_lock(storage, f"dlas-propose-{study.name}"))


def sampler_seed(seed: int | None, stored: int) -> int | None:
    """The seed of this process's sampler: the study's ``seed`` on a new study; on a study that
    already holds ``stored`` trials (resumed, or shared with other processes) a seed derived from
    both, so that the process continues the search instead of replaying the sequence of proposals
    its predecessors already measured."""
    if seed is None or stored == 0:
        return seed
    return zlib.crc32(f"{seed}:{stored}".encode())


def stored_trials(storage: optuna.storages.BaseStorage, name: str) -> int:
    """How many trials the study ``name`` holds in ``storage`` (0 when it does not exist yet)."""
    try:
        return len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        return 0


def _named_sampler(study: StudyConfig, name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (see :mod:`dlas_dse.samplers`), with the study's options
    and ``seed``."""
    options = study.sampler_options if name == study.sampler else {}
    return SAMPLERS.get(name).function(study, seed, **options)


def open_storage(url: str, heartbeat_interval_s: int = HEARTBEAT_INTERVAL_S,
                 grace_period_s: int = GRACE_PERIOD_S) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats so trials of dead workers are failed and retried."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)

    def storage() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_interval_s, grace_period=grace_period_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))

    for attempt in range(1, SCHEMA_ATTEMPTS):
        try:
            return storage()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as error:
            # workers started at once on an empty database race to create Optuna's tables and
            # types; the losers find them created a moment later (SQLite says "already exists")
            if isinstance(error, sqlalchemy.exc.OperationalError) and "already exists" not in str(error):
                raise
            time.sleep(0.5 * attempt)
    return storage()


class StudyNotFound(LookupError):
    """The study was never run in the storage it was looked for in (the message says how to run it)."""


def _storage_source(config: StudyConfig, storage_url: str | None) -> tuple[str, str]:
    """(file, field) the storage URL came from: the command line's ``--storage`` or the study's."""
    return ("command line", "--storage") if storage_url else (config.source, "storage")


def find_stored_study(name_or_path: str, storage_url: str | None = None) -> tuple[optuna.storages.BaseStorage, str]:
    """(storage, study name) of the study ``name_or_path`` in its storage (or ``storage_url``)."""
    from dlas_dse.config import load_study

    config = load_study(name_or_path)
    url = storage_url or config.storage
    missing = StudyNotFound(f"no study {config.name!r} in {mask_url(url)}; run `python -m dlas_dse optimize "
                            f"--study {name_or_path}` first")
    if not check_storage(url, *_storage_source(config, storage_url), create=False):
        raise missing  # and nothing created: a read never makes a database
    storage = open_storage(url)
    try:
        storage.get_study_id_from_name(config.name)
    except KeyError:
        raise missing from None
    return storage, config.name


def load_stored_study(name_or_path: str, storage_url: str | None = None) -> optuna.Study:
    """The study ``name_or_path`` from its storage (or ``storage_url``)."""
    storage, name = find_stored_study(name_or_path, storage_url)
    return optuna.load_study(study_name=name, storage=storage)


def open_study(study: StudyConfig, storage: optuna.storages.BaseStorage,
               sampler: str | None = None) -> optuna.Study:
    """Create the study in ``storage``, or load it when it exists (its objectives must match)."""
    opened = optuna.create_study(study_name=study.name, storage=storage, directions=study.directions,
                                 sampler=make_sampler(study, sampler, storage), load_if_exists=True)
    stored = opened.user_attrs.get("objectives")
    if stored is not None and stored != list(study.objectives) or [
            d.name.lower() for d in opened.directions] != study.directions:
        raise ConfigError(study.source, "objectives", f"the stored study {study.name!r} optimises "
                          f"{stored}; use another storage or study name")
    opened.set_metric_names(list(study.objectives))
    opened.set_user_attr("objectives", list(study.objectives))
    opened.set_user_attr("space", study.space.source)
    return opened


def preflight(space: SearchSpace) -> None:
    """Run every selectable technique's preflight check (data present, device reachable) so a
    study stops before any training when it cannot run; raises PreflightError."""
    for layer, registry in LAYERS.items():
        selector = f"{layer}.{registry.selector}"
        for name in space.parameter(selector).values:
            layers = nest(space.representative(**{selector: name}))
            for check in (registry.get(name).preflight, registry.preflight):
                if check is not None:
                    check(layers)


def _worker_identity() -> dict:
    process = psutil.Process()
    return {"host": socket.gethostname(), "pid": process.pid, "started": process.create_time()}


def _is_alive(worker: dict) -> bool:
    try:
        return abs(psutil.Process(worker["pid"]).create_time() - worker["started"]) < 1.0
    except psutil.Error:
        return False


def workers_beside_us(study: optuna.Study) -> list[int]:
    """Process ids of other live workers running this study's trials on this host."""
    me = _worker_identity()
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


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _from_queue(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> bool:
    """Whether ``trial`` was a waiting (enqueued or retried) trial, not one the sampler invented."""
    frozen = storage.get_trial(trial._trial_id)
    return bool(frozen.params) or "fixed_params" in frozen.system_attrs


def _wait_for_other_workers(study: optuna.Study, storage: optuna.storages.RDBStorage, deadline: float | None,
                            log: Callable[[str], None]) -> bool:
    """With no grid point waiting, wait while other workers still run points: a worker that dies
    (on this host: seen at once; elsewhere: it stops sending heartbeats and its trial is failed
    after the grace period) has its point enqueued again, and this worker takes it. Returns whether
    there is a point to run now."""
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


class _Progress:
    """A progress bar over the trial budget showing the current trial, its stage and elapsed time."""

    def __init__(self, total: int, done: int, enabled: bool):
        use_thread_lock_for_progress_bars()
        self.bar = tqdm(total=total, initial=min(done, total), unit="trial", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True)
        self.trial_started = time.monotonic()
        self.label = ""

    def start(self, number: int, config: dict) -> None:
        self.trial_started = time.monotonic()
        self.label = f"#{number} {config.get('model.architecture', '')}"
        self.stage("starting")

    def stage(self, name: str) -> None:
        step = f"{STAGES.index(name) + 1}/{len(STAGES)} " if name in STAGES else ""
        self.bar.set_postfix_str(f"{self.label} {step}{name} {time.monotonic() - self.trial_started:.0f}s")

    def finish(self, line: str, counted: int) -> None:
        self.bar.write(line)
        self.bar.n = min(counted, self.bar.total)
        self.bar.refresh()


def _summary(values: dict) -> str:
    return (f"accuracy {values['accuracy']:.3f}, latency {values['latency_ms']:.2f} ms, "
            f"size {values['size_bytes'] / 1e6:.2f} MB")


def tuning_spent_s(study: optuna.Study) -> float:
    """Seconds of auto-tuning the study's finished trials spent (what its tuning cap counts)."""
    return sum(trial.user_attrs.get("time_tune_s", 0.0)
               for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))


def _with_tuning_spent(settings: dict, study: optuna.Study) -> dict:
    """The trial settings plus the tuning time spent so far (only read under a tuning cap)."""
    if settings["tuning"]["max_total_s"] is None:
        return settings
    return {**settings, "tuning": {**settings["tuning"], "spent_s": tuning_spent_s(study)}}


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


def run_study(config: StudyConfig, n_trials: int | None = None, storage_url: str | None = None,
              sampler: str | None = None, timeout_s: float | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume) the study until ``n_trials`` trials count as finished, or ``timeout_s``."""
    sampler = sampler or config.sampler
    check_storage(storage_url or config.storage, *_storage_source(config, storage_url), create=True)
    preflight(config.space)
    start_worker_server()
    storage = open_storage(storage_url or config.storage, **config.settings["workers"])
    study = open_study(config, storage, sampler)
    recovered = recover_interrupted_trials(study, storage)
    if recovered:
        log(f"resuming: trials {recovered} were interrupted when a worker stopped; they are retried")
    beside = workers_beside_us(study)
    if beside:
        log(f"warning: worker process(es) {beside} already run this study on this machine; their measurements "
            "and this one's compete for the same cores (slower, and wrong latencies). Run one worker per machine.")
    if sampler == "grid":
        points = enqueue_grid(study, storage, config.space)
        target = n_trials or points
    else:
        target = n_trials or config.n_trials
    done = counted_trials(study)
    distinct = study.sampler if isinstance(study.sampler, DistinctSampler) else None
    exhausted = distinct.exhausted(study) if distinct else None
    if done >= target or exhausted or (sampler == "grid" and not _waiting(study) and not _running(study)):
        log(f"study {config.name!r} already has {done} finished trials (target {target})"
            f"{f'; {exhausted}' if exhausted else ''}; nothing to run")
        return study

    bar = _Progress(target, done, progress)
    excluded_in_a_row = 0

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        nonlocal excluded_in_a_row, exhausted
        if sampler == "grid" and not _from_queue(storage, trial):  # another worker took the last point
            trial.set_user_attr("no_grid_point_left", True)
            study.stop()
            raise optuna.TrialPruned("no grid point was left to run")
        if not claim_budget(study, storage, trial, target):  # other processes' trials took the rest
            trial.set_user_attr("over_budget", True)
            study.stop()
            raise optuna.TrialPruned(f"the budget of {target} trials is taken by finished and running trials")
        trial.set_user_attr("worker", _worker_identity())
        proposal: Proposal | None = distinct.proposal(trial.number) if distinct else None
        if proposal and proposal.exhausted:  # other workers took the last configurations meanwhile
            exhausted = proposal.exhausted
            trial.set_user_attr("space_exhausted", True)
            study.stop()
            raise optuna.TrialPruned(exhausted)
        sampled = config.space.sample(trial)
        trial.set_user_attr("config", sampled)
        excluded = config.space.violations(sampled)
        if excluded:
            excluded_in_a_row += 1
            trial.set_user_attr("excluded_by", [c.name for c in excluded])
            raise optuna.TrialPruned(f"excluded by constraint {excluded[0].name}")
        excluded_in_a_row = 0
        if proposal and proposal.repeat_of is not None:
            return _answer_from_storage(trial, proposal.repeat_of)
        bar.start(trial.number, sampled)
        started = time.perf_counter()
        try:
            result = run_trial(sampled, _with_tuning_spent(config.settings, study), config.cache_dir,
                               config.trial_timeout_s, bar.stage)
        except TrialFailure as failure:
            trial.set_user_attr("fail_reason", str(failure))
            trial.set_user_attr("time_trial_s", time.perf_counter() - started)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user (Ctrl-C); retried on resume")
            trial.set_user_attr("interrupted", True)
            raise
        wall = time.perf_counter() - started
        attributes = result["attributes"]
        staged = sum(attributes.get(f"time_{stage}_s", 0.0) for stage in STAGES)
        attributes.update(time_trial_s=wall,
                          time_framework_s=wall - staged - attributes["time_worker_start_s"])
        for key, value in attributes.items():
            trial.set_user_attr(key, value)
        return tuple(result["values"][name] for name in config.objectives)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal exhausted
        counted = counted_trials(study)
        settings = ", ".join(f"{name.split('.')[-1]}={value}" for name, value in trial.params.items())
        label = f"trial {trial.number} ({settings})"
        if trial.state == TrialState.COMPLETE and "repeat_of" in trial.user_attrs:
            bar.finish(f"{label} repeats trial {trial.user_attrs['repeat_of']}: answered from storage, nothing "
                       "measured (counts towards the budget)", counted)
        elif trial.state == TrialState.COMPLETE:
            bar.finish(f"{label} done in {trial.user_attrs['time_trial_s']:.1f} s: "
                       f"{_summary(dict(zip(config.objectives, trial.values)))}", counted)
        elif trial.state == TrialState.FAIL:
            bar.finish(f"{label} FAILED: {trial.user_attrs.get('fail_reason', '')}", counted)
        if distinct and not exhausted:
            exhausted = distinct.exhausted(study)
        if counted >= target or exhausted or excluded_in_a_row >= MAX_EXCLUDED_IN_A_ROW or (
                sampler == "grid" and not _waiting(study)):
            study.stop()

    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        while True:
            left = deadline - time.monotonic() if deadline else None
            study.optimize(objective, timeout=left, catch=(TrialFailure,), callbacks=[after_trial])
            if sampler != "grid" or excluded_in_a_row >= MAX_EXCLUDED_IN_A_ROW or counted_trials(study) >= target \
                    or not _wait_for_other_workers(study, storage, deadline, log):
                break
    finally:
        bar.bar.close()
    if excluded_in_a_row >= MAX_EXCLUDED_IN_A_ROW:
        log(f"stopped: the sampler proposed {excluded_in_a_row} excluded combinations in a row")
    if exhausted and counted_trials(study) < target:
        log(f"stopped after {counted_trials(study)} of {target} trials: {exhausted}")
    return study
