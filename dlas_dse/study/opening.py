"""Opening a study: its storage (with heartbeats, so dead workers' trials are retried), its sampler
(seeded per process, each proposal distinct), and finding a study already stored."""

from __future__ import annotations

import time
import warnings
import zlib
from pathlib import Path

import optuna
import sqlalchemy

from dlas_dse.config import SETTINGS, ConfigError, StudyConfig
from dlas_dse.samplers import SAMPLERS
from dlas_dse.study.sources import TrialSource
from dlas_dse.study.storage import check_storage, mask_url
from dlas_dse.study.workers import MAX_RETRIES

HEARTBEAT_INTERVAL_S = SETTINGS["workers"]["heartbeat_interval_s"].default
GRACE_PERIOD_S = SETTINGS["workers"]["grace_period_s"].default
SCHEMA_ATTEMPTS = 5

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(study: StudyConfig, source: TrialSource, name: str | None = None,
                 storage: optuna.storages.BaseStorage | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in the study (or ``name``), seeded for this process (see
    :func:`sampler_seed`), as ``source`` runs it (sampled trials: each proposal distinct)."""
    name = name or study.sampler
    seed = sampler_seed(study.seed, stored_trials(storage, study.name) if storage else 0)
    return source.sampler(_named_sampler(study, name, seed), study, storage, seed)


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


def storage_source(config: StudyConfig, storage_url: str | None) -> tuple[str, str]:
    """(file, field) the storage URL came from: the command line's ``--storage`` or the study's."""
    return ("command line", "--storage") if storage_url else (config.source, "storage")


def find_stored_study(name_or_path: str, storage_url: str | None = None) -> tuple[optuna.storages.BaseStorage, str]:
    """(storage, study name) of the study ``name_or_path`` in its storage (or ``storage_url``)."""
    from dlas_dse.config import load_study

    config = load_study(name_or_path)
    url = storage_url or config.storage
    missing = StudyNotFound(f"no study {config.name!r} in {mask_url(url)}; run `python -m dlas_dse optimize "
                            f"--study {name_or_path}` first")
    if not check_storage(url, *storage_source(config, storage_url), create=False):
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


def open_study(study: StudyConfig, storage: optuna.storages.BaseStorage, source: TrialSource,
               sampler: str | None = None) -> optuna.Study:
    """Create the study in ``storage``, or load it when it exists (its objectives must match)."""
    opened = optuna.create_study(study_name=study.name, storage=storage, directions=study.directions,
                                 sampler=make_sampler(study, source, sampler, storage), load_if_exists=True)
    stored = opened.user_attrs.get("objectives")
    if stored is not None and stored != list(study.objectives) or [
            d.name.lower() for d in opened.directions] != study.directions:
        raise ConfigError(study.source, "objectives", f"the stored study {study.name!r} optimises "
                          f"{stored}; use another storage or study name")
    opened.set_metric_names(list(study.objectives))
    opened.set_user_attr("objectives", list(study.objectives))
    opened.set_user_attr("space", study.space.source)
    return opened
