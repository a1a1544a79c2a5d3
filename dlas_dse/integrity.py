"""Content digests of a directory's files: recorded when an artifact is written, checked before use."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def file_digest(path: Path) -> str:
    """The sha256 of the file at ``path`` (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def digest_files(directory: Path, names: list[str]) -> dict[str, dict]:
    """``{name: {"size", "sha256"}}`` of the files ``names`` (relative paths) in ``directory``."""
    return {name: {"size": (directory / name).stat().st_size, "sha256": file_digest(directory / name)}
            for name in names}


def stored_files(directory: Path, leave_out: str) -> list[str]:
    """The regular files below ``directory`` (relative, sorted), except the one named ``leave_out``."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*")
                  if path.is_file() and path.name != leave_out)


def check_files(directory: Path, recorded: dict[str, dict], full: bool = True) -> str | None:
    """Why the files of ``directory`` differ from their ``recorded`` digests (None: they match).
    Sizes are always compared; contents only when ``full``."""
    for name, expected in recorded.items():
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError as error:
            return f"{name} is unreadable ({error.strerror or error})"
        if size != expected["size"]:
            return f"{name} has {size} bytes, {expected['size']} were written"
        if full and file_digest(path) != expected["sha256"]:
            return f"{name} has other contents than were written (sha256 differs, same size)"
    return None
