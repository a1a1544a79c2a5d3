"""The shared tuning database of one target at one thread count, in the artifact cache."""

from __future__ import annotations

from dlas_dse.cache import COMPLETE_MARKER, ArtifactCache
from dlas_dse.lazy import lazy_import

tvm = lazy_import("tvm")
ms = lazy_import("tvm.s_tir.meta_schedule")

STAGE = "tuning"
DATABASE_FILES = ("workloads.json", "records.json")
"""A MetaSchedule JSONDatabase's two files, in this order."""
FAILED_RUN_SECONDS = 1e9
"""MetaSchedule records a candidate that failed to build or run with a huge run time."""


class TuningDatabase:
    """The shared database of one target at one thread count (a schedule tuned at 1 thread is not
    the one to run at 4), in the artifact cache. Its files' digests are recorded
    in the entry's metadata after every merge and checked on every open: a database that fails is
    moved aside to the cache's ``.corrupt/`` (logged) and tuning starts again from an empty one."""

    def __init__(self, cache: ArtifactCache, target: tvm.target.Target, threads: int):
        self.cache = cache
        self.key = cache.key_for(STAGE, {"target": str(target), "threads": threads, "tvm": tvm.__version__})
        self.directory = cache.path(STAGE, self.key)
        self.directory.mkdir(parents=True, exist_ok=True)

    def open(self) -> ms.database.JSONDatabase:
        """The database as it is on disk now (checked; empty if it was corrupt)."""
        with self.cache.lock(STAGE, self.key):
            return self._open_checked()

    def _open_checked(self) -> ms.database.JSONDatabase:
        """``open`` for a caller holding the database's lock."""
        reason = self.cache.problem(STAGE, self.key)
        if reason is None:
            try:
                return self._load()
            except RuntimeError as error:  # TVM raises its parse errors as RuntimeError
                reason = f"MetaSchedule cannot load it ({str(error).strip().splitlines()[-1][:200]})"
        self.cache.quarantine(STAGE, self.key, reason)
        return self._load()

    def _load(self) -> ms.database.JSONDatabase:
        self.directory.mkdir(parents=True, exist_ok=True)
        database = ms.database.JSONDatabase(*(str(self.directory / name) for name in DATABASE_FILES))
        if not (self.directory / COMPLETE_MARKER).exists():  # new (empty files): record them
            self.cache.record_files(STAGE, self.key, list(DATABASE_FILES))
        return database

    def tuned(self, tasks: list) -> set[str]:
        """Names of ``tasks`` that already have a valid record."""
        with self.cache.lock(STAGE, self.key):
            database = self._open_checked()
            return {task.task_name for task in tasks
                    if database.has_workload(task.dispatched[0]) and any(
                        valid_record(record) for record in database.get_top_k(database.commit_workload(task.dispatched[0]), 1))}

    def merge(self, private: ms.database.Database) -> int:
        """Add ``private``'s valid records and record the database's new digests; returns how many."""
        records = [record for record in private.get_all_tuning_records() if valid_record(record)]
        with self.cache.lock(STAGE, self.key):
            shared = self._open_checked()
            for record in records:
                shared.commit_tuning_record(ms.database.TuningRecord(
                    record.trace, shared.commit_workload(record.workload.mod), record.run_secs,
                    record.target, record.args_info))
            self.cache.record_files(STAGE, self.key, list(DATABASE_FILES))
        return len(records)


def valid_record(record: ms.database.TuningRecord) -> bool:
    """Whether ``record`` was measured (MetaSchedule marks a failed candidate with a huge time)."""
    return bool(record.run_secs) and all(float(s) < FAILED_RUN_SECONDS for s in record.run_secs)
