"""A storage password is never shown: a real study on a PostgreSQL role with a password, run,
resumed by a worker, shown, reported and served by the dashboard; its secret appears in no
output, no file written and no attribute stored. Skips (saying why) without a reachable server."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import urllib.request
import uuid

import optuna
import pytest
import sqlalchemy

pytestmark = pytest.mark.slow
SERVER = os.environ.get("DLAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = f"Secret{uuid.uuid4().hex[:10]}"


@pytest.fixture
def secret_database():
    """A role with the password SECRET owning a fresh database (both dropped afterwards); yields
    the URL with the password in it."""
    name = f"dlas_secret_{uuid.uuid4().hex[:12]}"
    try:
        engine = sqlalchemy.create_engine(SERVER, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE ROLE {name} LOGIN PASSWORD '{SECRET}'"))
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name} OWNER {name}"))
    except sqlalchemy.exc.OperationalError as error:
        pytest.skip(f"no PostgreSQL server reachable at {SERVER} (set DLAS_TEST_POSTGRES): {error.orig}")
    server = sqlalchemy.engine.make_url(SERVER)
    try:
        yield f"postgresql://{name}:{SECRET}@{server.host}:{server.port or 5432}/{name}"
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            connection.execute(sqlalchemy.text(f"DROP ROLE IF EXISTS {name}"))
        engine.dispose()


def _served_pages(project, name: str, url: str) -> str:
    """The dashboard's first line, its page and its studies API, as one text."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(project.command("dashboard", "--study", name, "--storage", url, "--port", str(port)),
                               cwd=project.root, env=project.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 180)
        assert ready, "the dashboard printed nothing within 180 s"
        line = process.stdout.readline()
        page = re.search(r"http://\S+", line).group(0)
        texts = [line] + [urllib.request.urlopen(address, timeout=30).read().decode()
                          for address in (page, f"http://127.0.0.1:{port}/api/studies")]
        assert "<title>" in texts[1] and name in texts[2]
        return "\n".join(texts)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_storage_password_appears_in_no_output_file_or_attribute(project, secret_database):
    url = secret_database
    name = project.tiny(threads="1", n_trials=1)
    masked = url.replace(SECRET, "***")
    runs = {
        "optimize": project.run("optimize", "--study", name, "--storage", url, "--no-progress", "--no-remeasure"),
        "worker": project.run("worker", "--study", name, "--storage", url, "--no-progress"),
        "show": project.run("show", "--study", name, "--storage", url),
        "report": project.run("report", "--study", name, "--storage", url, "--out", str(project.root / "report")),
        "unknown database": project.run("optimize", "--study", name, "--storage", url + "_missing"),
        "unknown study": project.run("show", "--study", project.tiny("other"), "--storage", url),
    }
    for command in ("optimize", "worker", "show", "report"):
        assert runs[command].returncode == 0, f"{command}: {runs[command].stderr[-3000:]}"
    assert masked in runs["optimize"].stdout and masked in runs["worker"].stdout
    assert runs["unknown database"].returncode == 2 and f"cannot use {masked}_missing" in runs["unknown database"].stderr
    assert runs["unknown study"].returncode == 2 and f"no study 'other' in {masked}" in runs["unknown study"].stderr
    outputs = {command: run.stdout + run.stderr for command, run in runs.items()}
    outputs["dashboard"] = _served_pages(project, name, url)

    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 1
    outputs["storage attributes"] = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(
        study._study_id)] + [[t.user_attrs, t.system_attrs] for t in study.trials], default=str)
    written = [path for folder in (project.root, project.cache) for path in folder.rglob("*") if path.is_file()]
    assert any(path.name == "trials.csv" for path in written)
    leaks = [command for command, text in outputs.items() if SECRET in text]
    leaks += [str(path) for path in written if SECRET.encode() in path.read_bytes()]
    assert not leaks, f"the password appears in {leaks}"
