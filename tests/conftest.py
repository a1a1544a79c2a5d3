"""Shared helpers: write study/space YAML into a temporary project and run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import uuid

import pytest
import sqlalchemy

POSTGRES_SERVER = os.environ.get("DLAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

TINY_SPACE = """\
description: tiny test space
dataset:
  name: digits
model:
  architecture: mobilenet_v2
  epochs: 1
  seed: {seed}
compression:
  technique: none
algorithm:
  conv: direct
software:
  compiler: tvm
hardware:
  device: host-cpu
  threads: {threads}
"""

TINY_STUDY = """\
description: tiny test study
space: {space}
sampler: {sampler}
n_trials: {n_trials}
seed: 0
trial_timeout_s: {timeout}
evaluation: {{batch_size: 16, max_samples: 48}}
measurement: {{warmup_runs: 1, min_repeats: 3, min_time_s: 0.2}}
"""


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One artifact cache for the whole test session (trained checkpoints are reused)."""
    return tmp_path_factory.mktemp("cache")


class Project:
    """A temporary project directory with studies/ and search_spaces/."""

    def __init__(self, root: Path, cache: Path):
        self.root, self.cache = root, cache
        (root / "studies").mkdir()
        (root / "search_spaces").mkdir()

    def write(self, folder: str, name: str, text: str) -> Path:
        path = self.root / folder / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    def tiny(self, name: str = "tiny", seed: str = "0", threads: str = "{choices: [1, 2]}",
             sampler: str = "random", n_trials: int = 2, timeout: float = 600) -> str:
        """Write a tiny study + space (mobilenet_v2, 1 epoch) and return the study name."""
        self.write("search_spaces", name, TINY_SPACE.format(seed=seed, threads=threads))
        self.write("studies", name, TINY_STUDY.format(space=name, sampler=sampler, n_trials=n_trials,
                                                      timeout=timeout))
        return name

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.root / 'results'}/"

    def env(self) -> dict:
        return {**os.environ, "DLAS_CACHE_DIR": str(self.cache), "PYTHONUNBUFFERED": "1"}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dlas_dse", *args]

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run ``python -m dlas_dse ARGS`` in the project directory."""
        return subprocess.run(self.command(*args), cwd=self.root, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path: Path, shared_cache: Path) -> Project:
    return Project(tmp_path, shared_cache)


FINISHED_SPACE = """\
description: a small finished study shared by the report, dashboard, notebook and surrogate tests
dataset:
  name: digits
model:
  architecture: {choices: [mobilenet_v2, resnet18]}
  epochs: 1
  seed: 0
compression:
  technique: none
algorithm:
  conv: {choices: [direct, gemm]}
software:
  compiler: tvm
hardware:
  device: host-cpu
  threads: {choices: [1, 2]}
"""


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> tuple[Project, str]:
    """A study whose eight grid points (2 models x 2 conv algorithms x 2 thread counts) all ran:
    real trainings, builds and measurements, run once per test session. It has a cache of its own,
    so its reuse flags do not depend on which tests ran before it."""
    project = Project(tmp_path_factory.mktemp("finished"), tmp_path_factory.mktemp("finished-cache"))
    project.write("search_spaces", "finished", FINISHED_SPACE)
    project.write("studies", "finished", TINY_STUDY.format(space="finished", sampler="grid", n_trials=8,
                                                           timeout=600))
    result = project.run("optimize", "--study", "finished", "--no-progress", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return project, "finished"


@pytest.fixture
def database():
    """A fresh PostgreSQL database for this test (dropped afterwards); yields its URL."""
    name = f"dlas_test_{uuid.uuid4().hex[:12]}"
    try:
        engine = sqlalchemy.create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    except sqlalchemy.exc.OperationalError as error:
        pytest.skip(f"no PostgreSQL server reachable at {POSTGRES_SERVER} (set DLAS_TEST_POSTGRES): {error.orig}")
    try:
        yield POSTGRES_SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
        engine.dispose()
