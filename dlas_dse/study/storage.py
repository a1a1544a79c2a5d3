"""Optuna storage URLs: shown with the password masked, and checked before any work starts (the
dialect known, the server reachable, an SQLite file's directory writable), so a bad storage is
one message naming where the URL came from, never a traceback or a half-created database."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL, make_url

from dlas_dse.files import ConfigError, project_root

CONNECT_TIMEOUT_S = 5
"""How long to wait for a database server before saying it cannot be reached."""
EXAMPLES = "sqlite:///results/study.db or postgresql://user@host/db"
_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``, for every output."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _PASSWORD_IN_TEXT.sub(r"\1***@", str(url))


def parse_url(url: object, file: str | os.PathLike, field: str) -> URL:
    """The parsed SQLAlchemy URL of a known dialect; a ConfigError naming ``file`` and ``field``
    otherwise (no connection is made)."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(file, field, f"expected an SQLAlchemy URL like {EXAMPLES}, got {url!r}")
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(file, field, f"cannot parse {mask_url(url)!r} as an SQLAlchemy URL; "
                          f"write it like {EXAMPLES}") from None
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise ConfigError(file, field, f"unknown database {parsed.drivername!r} in {mask_url(url)}; "
                          f"use sqlite, postgresql or mysql, e.g. {EXAMPLES}") from None
    return parsed


def _sqlite_path(url: URL) -> Path | None:
    """The database file of an SQLite URL (None: in memory)."""
    return Path(url.database) if url.database and url.database != ":memory:" else None


def _check_sqlite_directory(path: Path, file: str | os.PathLike, field: str) -> None:
    """The file's directory exists (or is the project's ``results/``, created on first use) and
    this process may create and write the file there (tried with a file deleted at once)."""
    directory = path.absolute().parent
    if not directory.exists() and directory == project_root() / "results":
        directory = directory.parent
    if not directory.is_dir():
        raise ConfigError(file, field, f"the directory {directory} of the SQLite file {path} does not exist; "
                          f"create it (mkdir -p {directory}) or choose another path")
    try:
        if path.exists():
            path.open("r+b").close()
        else:
            tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        raise ConfigError(file, field, f"cannot write the SQLite file {path} ({error.strerror}); choose a "
                          "writable path or fix the permissions") from None


def _holds_optuna_tables(url: URL, file: str | os.PathLike, field: str) -> bool:
    """Connect (within CONNECT_TIMEOUT_S for a server) and say whether Optuna's tables exist."""
    arguments = {} if url.get_backend_name() == "sqlite" else {"connect_timeout": CONNECT_TIMEOUT_S}
    shown = url.render_as_string(hide_password=True)
    try:
        engine = sqlalchemy.create_engine(url, connect_args=arguments, poolclass=sqlalchemy.pool.NullPool)
    except ModuleNotFoundError as error:
        raise ConfigError(file, field, f"the database driver for {shown} is not installed ({error}); "
                          f"install it, e.g. pip install {error.name}") from None
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    except sqlalchemy.exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        if url.password:
            reason = reason.replace(str(url.password), "***")
        raise ConfigError(file, field, f"cannot use {shown}: {reason}; check that the server runs and the "
                          "host, port, database and user (and for SQLite, the file) are right") from None
    finally:
        engine.dispose()


def check_storage(url: str, file: str | os.PathLike, field: str, create: bool) -> bool:
    """Check the storage ``url`` (from ``file``'s ``field``) before any work: a known dialect, a
    reachable server, and, when the command may ``create`` it, a writable SQLite directory.
    Creates nothing. Returns whether it already holds Optuna's tables (False: no study yet)."""
    parsed = parse_url(url, file, field)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        if path is None:
            return False
        if create:
            _check_sqlite_directory(path, file, field)
        if not path.exists():
            return False
    return _holds_optuna_tables(parsed, file, field)
