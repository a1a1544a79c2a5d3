"""Content-addressed artifact store: checkpoints, compiled libraries, accuracy results.

An artifact lives in a directory named by the hash of everything it depends on. It is built in a
temporary directory and renamed into place, so a crash never leaves a half-written artifact, and a
per-key file lock makes concurrent workers build it once and share it. Its metadata records the
size and sha256 of each of its files; a read checks them (sizes always, contents once per entry
per ``ArtifactCache`` object), and an entry that fails is moved aside to ``.corrupt/`` with the
reason, logged, and built again.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import inspect
import json
import logging
import os
import pkgutil
import shutil
import time
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from dlas_dse.integrity import check_files, digest_files, stored_files

COMPLETE_MARKER = "meta.json"
CORRUPT_DIR = ".corrupt"
FORMAT_VERSION = 5
"""Part of every key: bump it when what an artifact directory holds changes (5: file digests)."""
LOGGER = logging.getLogger("dlas_dse.cache")
"""A warning for every corrupt entry moved aside (its key and why)."""


def code_fingerprint(*modules: Any) -> str:
    """A digest of the source code of ``modules``: part of an artifact's key, so that changing the
    code that produces an artifact never serves a stale one."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def package_modules(name: str) -> list:
    """The package ``name`` and every module in it (imported), in name order: for a fingerprint of
    code that is imported lazily, so that the key never depends on what a process happened to load."""
    package = importlib.import_module(name)
    names = sorted(module.name for module in pkgutil.iter_modules(package.__path__))
    return [package] + [importlib.import_module(f"{name}.{module}") for module in names]


def content_key(inputs: Any) -> str:
    """A stable hex digest of JSON-serialisable ``inputs`` (key order does not matter)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class ArtifactCache:
    """A directory of artifacts grouped by stage (``train``, ``build``, ``accuracy`` ...)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._verified: set[tuple[str, str]] = set()  # entries whose contents this object checked

    def path(self, stage: str, key: str) -> Path:
        """Where the artifact of ``stage`` with ``key`` lives (whether or not it exists)."""
        return self.root / stage / key

    @staticmethod
    def key_for(stage: str, inputs: Any) -> str:
        """The key of the artifact ``stage`` makes from ``inputs``."""
        return content_key({"stage": stage, "inputs": inputs, "format": FORMAT_VERSION})

    def contains(self, stage: str, key: str) -> bool:
        """Whether a complete artifact exists for ``stage`` and ``key``."""
        return (self.path(stage, key) / COMPLETE_MARKER).exists()

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on ``key`` of ``stage`` (across processes on this file system)."""
        lock_dir = self.root / stage
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f".{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def problem(self, stage: str, key: str, full: bool = True) -> str | None:
        """Why the entry of ``stage`` and ``key`` cannot be used (None: intact, or holds no file).
        Checks its metadata, each file's size, and with ``full`` each file's sha256."""
        directory = self.path(stage, key)
        if not (directory / COMPLETE_MARKER).exists():
            leftovers = stored_files(directory, COMPLETE_MARKER) if directory.is_dir() else []
            return f"{leftovers[0]} has no {COMPLETE_MARKER} beside it to check it by" if leftovers else None
        try:
            metadata = self.metadata(directory)
        except (OSError, ValueError) as error:
            return f"{COMPLETE_MARKER} is unreadable ({type(error).__name__}: {error})"
        recorded = metadata.get("files") if isinstance(metadata, dict) else None
        if not isinstance(recorded, dict):
            return f"{COMPLETE_MARKER} records no file digests (an entry of an older format, never read again)"
        return check_files(directory, recorded, full)

    def quarantine(self, stage: str, key: str, reason: str) -> Path:
        """Move the entry's files aside to ``.corrupt/<stage>-<key>-<time>/`` with ``reason.txt`` and
        log a warning; the caller holds the entry's lock. Its metadata goes first, so that readers
        see no entry; subdirectories (a tuning database's runs in progress) stay."""
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S.%f")
        aside = self.root / CORRUPT_DIR / f"{stage}-{key}-{stamp}"
        aside.mkdir(parents=True)
        source = self.path(stage, key)
        for name in [COMPLETE_MARKER, *(path.name for path in source.iterdir()
                                        if path.is_file() and path.name != COMPLETE_MARKER)]:
            if (source / name).exists():
                os.rename(source / name, aside / name)
        with suppress(OSError):
            source.rmdir()  # empty now, unless something stays
        (aside / "reason.txt").write_text(f"{stage} {key}: {reason}\n")
        self._verified.discard((stage, key))
        LOGGER.warning("cache entry %s/%s is corrupt (%s): moved to %s, to be rebuilt", stage, key, reason, aside)
        return aside

    def record_files(self, stage: str, key: str, names: list[str]) -> None:
        """Write the entry's metadata with the digests of its files ``names`` (atomically, replacing
        it): for an entry its own writer changes in place, such as the tuning database."""
        directory = self.path(stage, key)
        written = directory / f"{COMPLETE_MARKER}.tmp-{os.getpid()}"
        written.write_text(json.dumps({"files": digest_files(directory, names)}, indent=1))
        os.replace(written, directory / COMPLETE_MARKER)

    def _intact(self, stage: str, key: str) -> bool:
        """Whether a complete entry passes its check (contents once per entry for this object)."""
        if not self.contains(stage, key):
            return False
        if self.problem(stage, key, full=(stage, key) not in self._verified) is not None:
            return False
        self._verified.add((stage, key))
        return True

    def get_or_create(self, stage: str, inputs: Any,
                      create: Callable[[Path], dict | None]) -> tuple[Path, bool]:
        """Return ``(directory, hit)``; on a miss, or an entry that fails its check (moved aside),
        ``create(tmp_dir)`` writes the artifact's files and may return metadata to keep beside them."""
        key = self.key_for(stage, inputs)
        final = self.path(stage, key)
        if self._intact(stage, key):
            return final, True
        with self.lock(stage, key):
            if self._intact(stage, key):  # another process rebuilt it while we waited
                return final, True
            if self.contains(stage, key):
                self.quarantine(stage, key, self.problem(stage, key) or "failed its check")
            for stale in final.parent.glob(f"{key}.tmp-*"):  # left by a killed builder; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            temporary = final.with_name(f"{key}.tmp-{os.getpid()}")
            temporary.mkdir(parents=True)
            started = time.time()
            try:
                metadata = create(temporary) or {}
                metadata.update(inputs=inputs, seconds=time.time() - started, created=time.time(),
                                files=digest_files(temporary, stored_files(temporary, COMPLETE_MARKER)))
                (temporary / COMPLETE_MARKER).write_text(json.dumps(metadata, default=str, indent=1))
                shutil.rmtree(final, ignore_errors=True)
                os.rename(temporary, final)
                self._verified.add((stage, key))
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
        return final, False

    @staticmethod
    def metadata(directory: Path) -> dict:
        """The metadata stored beside an artifact (what ``create`` returned, plus inputs, timing and
        file digests)."""
        return json.loads((directory / COMPLETE_MARKER).read_text())

    def get_or_compute_json(self, stage: str, inputs: Any,
                            compute: Callable[[], dict]) -> tuple[dict, bool]:
        """Cache a small JSON result (e.g. an accuracy) computed by ``compute()``."""

        def create(directory: Path) -> None:
            (directory / "value.json").write_text(json.dumps(compute()))

        directory, hit = self.get_or_create(stage, inputs, create)
        return json.loads((directory / "value.json").read_text()), hit
