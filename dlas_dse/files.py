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


class _DuplicateKey(yaml.YAMLError):
    """A mapping holds one key twice (YAML would silently keep the last)."""

    def __init__(self, key, first_line: int, second_line: int):
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that holds one key twice."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in lines:
                    raise _DuplicateKey(key, lines[key], line)
                lines[key] = line
            except TypeError:  # an unhashable key: the base loader reports it
                break
        return super().construct_mapping(node, deep)


def _text(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is named with its offset and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(path, "(encoding)", f"not UTF-8: byte 0x{data[error.start]:02x} at offset {error.start} "
                          f"(line {line}) cannot be decoded; save the file as UTF-8 "
                          "(e.g. iconv -f latin1 -t utf-8)") from None


def read_yaml(path: Path) -> dict:
    """The mapping a YAML file holds; a syntax error names its line and column, a key given twice
    both lines, a byte that is not UTF-8 its offset."""
    text = _text(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as error:
        raise ConfigError(path, str(error.key), f"given twice, on lines {error.first_line} and "
                          f"{error.second_line}; keep one") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, "(syntax)", f"{where}{getattr(error, 'problem', error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "(top level)", "expected a mapping of fields")
    return data
