"""Where a project's study and space files are, what they hold, and where its artifacts are cached."""

from __future__ import annotations

import os
from pathlib import Path

from dlas_dse.files import ConfigError, project_root, read_yaml


def resolve(name_or_path: str, folder: str, what: str, relative_to: Path | None = None) -> Path:
    """A name (``quickstart``) or a path (``my/space.yaml``) → an existing YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    base = relative_to if relative_to is not None else project_root()
    path = base / folder / f"{name_or_path}.yaml"
    if path.exists():
        return path
    known = sorted(p.stem for p in (base / folder).glob("*.yaml"))
    raise ConfigError(path, what, f"unknown {what} {name_or_path!r}; available: "
                      f"{', '.join(known) or '(none)'} in {base / folder}")


def default_cache_dir() -> str:
    """The artifact cache: ``$DLAS_CACHE_DIR``, else ``results/cache`` of the project."""
    return os.environ.get("DLAS_CACHE_DIR") or str(project_root() / "results" / "cache")


def available(folder: str) -> list[tuple[str, str]]:
    """(name, description) of every YAML file in ``studies/`` or ``search_spaces/``."""
    entries = []
    for path in sorted((project_root() / folder).glob("*.yaml")):
        if path.name == "hardware.yaml":  # the device catalogue, not a space (see `devices`)
            continue
        try:
            description = str(read_yaml(path).get("description", ""))
        except ConfigError as error:
            description = f"(unreadable: {error.field}: {error.problem})"
        entries.append((path.stem, description.strip().splitlines()[0] if description.strip() else ""))
    return entries
