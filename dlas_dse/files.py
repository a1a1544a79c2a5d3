"""The project's YAML files: where they live, how they are read, and the one error type that
names the file, the field and what is allowed."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import yaml


class ConfigError(Exception):
    """A configuration problem: which file, which field, what is wrong, what is allowed."""

    def __init__(self, file: str | os.PathLike, field: str, problem: str):
        self.file, self.field, self.problem = str(file), field, problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.problem}"


def unknown_field(name: str, allowed: list[str]) -> str:
    """'unknown field X; allowed: ...' with a did-you-mean hint."""
    hint = difflib.get_close_matches(name, allowed, n=1)
    suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown field {name!r}{suffix}; allowed: {', '.join(allowed)}"


def project_root() -> Path:
    """The directory holding ``studies/`` and ``search_spaces/``: the working directory if it
    has them, else the checkout this package lives in."""
    cwd = Path.cwd()
    if (cwd / "studies").is_dir() or (cwd / "search_spaces").is_dir():
        return cwd
    return Path(__file__).resolve().parent.parent


def read_yaml(path: Path) -> dict:
    """The mapping a YAML file holds; a syntax error names its line and column."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, "(syntax)", f"{where}{getattr(error, 'problem', error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "(top level)", "expected a mapping of fields")
    return data
