"""The artifact cache is content-addressed, atomic, and builds once under concurrency."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from dlas_dse.cache import FORMAT_VERSION, ArtifactCache, content_key


def test_key_ignores_order_and_sees_every_value():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1, "b": [1, 2]}) != content_key({"a": 1, "b": [2, 1]})
    assert content_key({"a": 1}) != content_key({"a": 1.5})


def test_miss_then_hit_returns_the_same_artifact(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def create(directory: Path) -> dict:
        calls.append(directory)
        (directory / "weights.bin").write_bytes(b"abc")
        return {"note": "made"}

    first, hit1 = cache.get_or_create("train", {"model": "m"}, create)
    second, hit2 = cache.get_or_create("train", {"model": "m"}, create)
    other, hit3 = cache.get_or_create("train", {"model": "n"}, create)
    assert (hit1, hit2, hit3) == (False, True, False)
    assert first == second != other
    assert (second / "weights.bin").read_bytes() == b"abc"
    assert len(calls) == 2


def test_failed_creation_leaves_nothing_behind(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(directory: Path) -> None:
        (directory / "half.bin").write_bytes(b"x")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_create("build", {"k": 1}, broken)
    assert [p.name for p in (tmp_path / "build").iterdir() if not p.name.startswith(".")] == []
    value, hit = cache.get_or_compute_json("build", {"k": 1}, lambda: {"ok": True})
    assert value == {"ok": True} and hit is False


def test_leftovers_of_a_killed_builder_are_removed(tmp_path):
    cache = ArtifactCache(tmp_path)
    key = content_key({"stage": "train", "inputs": {"m": 1}, "format": FORMAT_VERSION})
    leftover = tmp_path / "train" / f"{key}.tmp-99999"
    leftover.mkdir(parents=True)
    (leftover / "half.pt").write_bytes(b"x")

    def create(directory: Path) -> None:
        (directory / "ok").write_text("1")

    directory, hit = cache.get_or_create("train", {"m": 1}, create)
    assert not hit and (directory / "ok").exists() and not leftover.exists()


def _slow_create(root: str, log: str) -> None:
    def create(directory: Path) -> None:
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(1.0)
        (directory / "artifact").write_text("done")

    ArtifactCache(root).get_or_create("build", {"same": True}, create)


def test_concurrent_workers_build_once(tmp_path):
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_slow_create, args=(str(tmp_path / "c"), str(log))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert log.read_text().count("built") == 1
