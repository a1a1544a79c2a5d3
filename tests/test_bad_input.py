"""Bad input stops the real CLI before any work: one message naming the file or option and what
to do, exit code 2, no traceback, and nothing written (no database, no cache entry, no results)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest


def _files(*folders: Path) -> set[Path]:
    return {path for folder in folders for path in folder.rglob("*")}


def refused(project, *args: str, env: dict | None = None) -> str:
    """Run the CLI, check that it refused cleanly and wrote nothing; return its stderr."""
    before = _files(project.root, project.cache)
    result = subprocess.run(project.command(*args), cwd=project.root, env={**project.env(), **(env or {})},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert _files(project.root, project.cache) == before
    return result.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the probe closes


@pytest.mark.parametrize("url, problem", [
    ("sqlit:///x.db", "unknown database 'sqlit' in sqlit:///x.db; use sqlite, postgresql or mysql"),
    ("postgresql://user:SECRET@host:badport/db", "cannot parse 'postgresql://user:***@host:badport/db'")])
def test_a_storage_url_of_an_unknown_kind_or_unparseable(project, url, problem):
    name = project.tiny()
    error = refused(project, "optimize", "--study", name, "--storage", url)
    assert f"command line: --storage: {problem}" in error and "SECRET" not in error


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-host.invalid"])
def test_a_storage_server_that_cannot_be_reached(project, host):
    name = project.tiny()
    url = f"postgresql://postgres:SECRET@{host.format(port=_closed_port())}/test"
    error = refused(project, "worker", "--study", name, "--storage", url)
    assert "command line: --storage: cannot use postgresql://postgres:***@" in error
    assert "check that the server runs" in error and "SECRET" not in error


def test_a_storage_in_a_study_file_that_cannot_be_reached(project):
    name = project.tiny()
    study = project.root / "studies" / f"{name}.yaml"
    study.write_text(study.read_text() + f"storage: postgresql://postgres@127.0.0.1:{_closed_port()}/test\n")
    error = refused(project, "optimize", "--study", name)
    assert f"{study}: storage: cannot use postgresql://postgres@127.0.0.1" in error


def test_an_sqlite_file_in_a_missing_directory(project):
    name = project.tiny()
    missing = project.root / "no" / "such"
    error = refused(project, "optimize", "--study", name, "--storage", f"sqlite:///{missing}/study.db")
    assert f"--storage: the directory {missing} of the SQLite file" in error and f"mkdir -p {missing}" in error


def test_an_sqlite_file_where_nothing_can_be_written(project):
    name = project.tiny()
    error = refused(project, "grid", "--study", name, "--storage", "sqlite:////sys/study.db")
    assert "--storage: cannot write the SQLite file /sys/study.db" in error and "writable path" in error


def test_a_tracker_variable_that_is_not_host_and_port(project):
    name = project.tiny(threads="1")
    space = project.root / "search_spaces" / f"{name}.yaml"
    space.write_text(space.read_text().replace("device: host-cpu", "device: edge-arm"))
    error = refused(project, "optimize", "--study", name, env={"DLAS_RPC_TRACKER": "127.0.0.1:notaport"})
    assert "environment: DLAS_RPC_TRACKER: expected host:port" in error and "'127.0.0.1:notaport'" in error
    assert "unset it" in error


@pytest.mark.parametrize("folder", ["studies", "search_spaces"])
def test_a_file_that_is_not_utf8(project, folder):
    name = project.tiny()
    path = project.root / folder / f"{name}.yaml"
    path.write_bytes(b"description: caf\xe9\n" + path.read_bytes().split(b"\n", 1)[1])
    error = refused(project, "optimize", "--study", name)
    assert f"{path}: (encoding): not UTF-8: byte 0xe9 at offset 16 (line 1)" in error and "as UTF-8" in error


def test_a_key_given_twice(project):
    name = project.tiny()
    path = project.root / "studies" / f"{name}.yaml"
    path.write_text(path.read_text() + "n_trials: 5\n")
    first = path.read_text().splitlines().index("n_trials: 2") + 1
    last = len(path.read_text().splitlines())
    error = refused(project, "optimize", "--study", name)
    assert f"{path}: n_trials: given twice, on lines {first} and {last}; keep one" in error


def test_an_empty_search_space(project):
    name = project.tiny()
    path = project.root / "search_spaces" / f"{name}.yaml"
    path.write_text("description: nothing yet\n")
    error = refused(project, "optimize", "--study", name)
    assert f"{path}: (top level): no layer blocks" in error and "dataset, model, compression" in error


@pytest.mark.parametrize("command", [("show",), ("report",), ("remeasure",), ("dashboard", "--port", "1")])
def test_a_read_of_a_study_that_never_ran_creates_no_database(project, command):
    name = project.tiny()
    error = refused(project, command[0], "--study", name, *command[1:], "--storage", "sqlite:///never.db")
    assert f"no study {name!r} in sqlite:///never.db" in error and f"optimize --study {name}" in error
    assert not (project.root / "never.db").exists()
