"""Content-addressed artifact store: checkpoints, compiled libraries, accuracy results.

An artifact lives in a directory named by the hash of everything it depends on. It is built in a
temporary directory and renamed into place, so a crash never leaves a half-written artifact, and a
per-key file lock makes concurrent workers build it once and share it.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

COMPLETE_MARKER = "meta.json"
FORMAT_VERSION = 4
"""Part of every key: bump it when what an artifact directory holds changes."""


def code_fingerprint(*modules: Any) -> str:
    """A digest of the source code of ``modules``: part of an artifact's key, so that changing the
    code that produces an artifact never serves a stale one."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def content_key(inputs: Any) -> str:
    """A stable hex digest of JSON-serialisable ``inputs`` (key order does not matter)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class ArtifactCache:
    """A directory of artifacts grouped by stage (``train``, ``build``, ``accuracy`` ...)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

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

    def get_or_create(self, stage: str, inputs: Any,
                      create: Callable[[Path], dict | None]) -> tuple[Path, bool]:
        """Return ``(directory, hit)``; on a miss, ``create(tmp_dir)`` writes the artifact's files
        and may return metadata to keep beside them."""
        key = self.key_for(stage, inputs)
        final = self.path(stage, key)
        if self.contains(stage, key):
            return final, True
        with self.lock(stage, key):
            if self.contains(stage, key):
                return final, True
            for stale in final.parent.glob(f"{key}.tmp-*"):  # left by a killed builder; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            temporary = final.with_name(f"{key}.tmp-{os.getpid()}")
            temporary.mkdir(parents=True)
            started = time.time()
            try:
                metadata = create(temporary) or {}
                metadata.update(inputs=inputs, seconds=time.time() - started, created=time.time())
                (temporary / COMPLETE_MARKER).write_text(json.dumps(metadata, default=str, indent=1))
                shutil.rmtree(final, ignore_errors=True)
                os.rename(temporary, final)
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
        return final, False

    @staticmethod
    def metadata(directory: Path) -> dict:
        """The metadata stored beside an artifact (what ``create`` returned, plus inputs and timing)."""
        return json.loads((directory / COMPLETE_MARKER).read_text())

    def get_or_compute_json(self, stage: str, inputs: Any,
                            compute: Callable[[], dict]) -> tuple[dict, bool]:
        """Cache a small JSON result (e.g. an accuracy) computed by ``compute()``."""

        def create(directory: Path) -> None:
            (directory / "value.json").write_text(json.dumps(compute()))

        directory, hit = self.get_or_create(stage, inputs, create)
        return json.loads((directory / "value.json").read_text()), hit
