"""``cache verify``: check every entry of an artifact cache, tuning databases included, against the
file digests recorded when it was written; with ``repair``, move the corrupt ones aside."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlas_dse.cache import CORRUPT_DIR, ArtifactCache


@dataclass
class Finding:
    """One corrupt entry: where, why, and where it was moved (None: left in place)."""

    stage: str
    key: str
    reason: str
    moved_to: Path | None = None


def entries(root: Path) -> list[tuple[str, str]]:
    """``(stage, key)`` of every entry directory under ``root`` (not builds in progress, locks or
    ``.corrupt``)."""
    return [(stage.name, entry.name) for stage in sorted(root.iterdir())
            if stage.is_dir() and not stage.name.startswith(".")
            for entry in sorted(stage.iterdir())
            if entry.is_dir() and not entry.name.startswith(".") and ".tmp-" not in entry.name]


def verify_cache(root: str | Path, repair: bool = False) -> tuple[int, list[Finding]]:
    """Check every entry under ``root`` (each under its lock, so never one being written); returns
    how many were checked and the corrupt ones, moved to ``.corrupt/`` when ``repair``."""
    cache, findings = ArtifactCache(root), []
    checked = entries(Path(root))
    for stage, key in checked:
        with cache.lock(stage, key):
            reason = cache.problem(stage, key)
            if reason is not None:
                findings.append(Finding(stage, key, reason, cache.quarantine(stage, key, reason) if repair else None))
    return len(checked), findings


def describe(root: str | Path, checked: int, findings: list[Finding], repair: bool) -> str:
    """What ``cache verify`` prints: each corrupt entry with its reason, then a summary."""
    lines = [f"{f.stage}/{f.key}: {f.reason}" + (f"\n  moved to {f.moved_to}" if f.moved_to else "")
             for f in findings]
    if not findings:
        lines.append(f"{checked} entries checked in {root}: all intact")
    elif repair:
        lines.append(f"{checked} entries checked in {root}: {len(findings)} corrupt, moved to "
                     f"{Path(root) / CORRUPT_DIR}; the next trial that needs one rebuilds it")
    else:
        lines.append(f"{checked} entries checked in {root}: {len(findings)} corrupt; run `python -m dlas_dse "
                     f"cache verify --repair` to move them aside (the next trial that needs one rebuilds it)")
    return "\n".join(lines)
