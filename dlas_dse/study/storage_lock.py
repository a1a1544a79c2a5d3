"""A lock shared by every process that uses one Optuna storage, wherever those processes run."""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from pathlib import Path
from typing import Iterator

import optuna
import sqlalchemy


@contextlib.contextmanager
def storage_lock(storage: optuna.storages.BaseStorage, name: str) -> Iterator[None]:
    """An exclusive lock named ``name`` across every process using ``storage``: a PostgreSQL or
    MySQL advisory lock on the database server, a file lock beside an SQLite file (an in-memory
    storage has one process: no lock is needed)."""
    if not isinstance(storage, optuna.storages.RDBStorage):
        yield
        return
    url = storage.engine.url
    if url.get_backend_name() == "sqlite":
        with open(Path(str(url.database) + f".{name}.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    with storage.engine.connect() as connection:
        if url.get_backend_name() == "postgresql":
            key = zlib.crc32(name.encode())
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        else:
            connection.execute(sqlalchemy.text("SELECT GET_LOCK(:name, -1)"), {"name": name})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:name)"), {"name": name})
