"""A corrupt cache entry (flipped bytes of the same size, or truncated) is detected before use,
moved to ``.corrupt/`` with its reason, logged, and rebuilt to the value it had."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import te
from tvm.s_tir import meta_schedule as ms

from dlas_dse.cache import CORRUPT_DIR, ArtifactCache
from dlas_dse.config import settings_with_defaults
from dlas_dse.stack.compilers import BuildRequest, compile_model
from dlas_dse.stack.compression import compress
from dlas_dse.stack.datasets import load_dataset
from dlas_dse.stack.devices import create_device
from dlas_dse.stack.models import trained_model
from dlas_dse.stack.tuning.database import TuningDatabase
from dlas_dse.trial import run_trial

DIGITS = {"name": "digits", "image_size": 32, "val_fraction": 0.95, "split_seed": 0}  # a small training split
MODEL = {"architecture": "mobilenet_v2", "epochs": 0, "learning_rate": 0.05, "batch_size": 64, "seed": 0,
         "weights": ""}
PRUNING = {"technique": "weight_pruning", "sparsity": 0.5, "max_layer_sparsity": 0.95, "finetune_epochs": 0,
           "finetune_learning_rate": 0.01}
IMAGES = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DIGITS)


def rewrite(path: Path, data: bytes) -> None:
    """Replace ``path`` by a new file (a library this process loaded keeps its own pages)."""
    path.with_name("corrupted").write_bytes(data)
    path.with_name("corrupted").replace(path)


def flip(path: Path) -> None:
    """Invert one byte in the middle of ``path``: the same size, other contents."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rewrite(path, bytes(data))


def truncate(path: Path) -> None:
    """Keep the first half of ``path``."""
    rewrite(path, path.read_bytes()[:path.stat().st_size // 2])


CORRUPTIONS = {"flipped": flip, "truncated": truncate}


def state(model: torch.nn.Module) -> dict:
    return {name: tensor.numpy().copy() for name, tensor in model.state_dict().items()}


def checkpoint(cache: ArtifactCache, digits) -> tuple[dict, str, bool]:
    """A real (untrained: 0 epochs, BN statistics only) checkpoint of the train stage."""
    model, record = trained_model(MODEL, digits, DIGITS, cache)
    return state(model), f"train/{record['checkpoint']}/checkpoint.pt", record["hit"]


def compressed_model(cache: ArtifactCache, digits) -> tuple[dict, str, bool]:
    """A real weight-pruned model of the compress stage (its checkpoint from the train stage)."""
    model, training = trained_model(MODEL, digits, DIGITS, cache)
    pruned = compress(model, digits, PRUNING, MODEL, training["checkpoint"], cache)
    return state(pruned.model), f"compress/{pruned.key}/compressed.pt", pruned.record["hit"]


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def library(cache: ArtifactCache, digits) -> tuple[np.ndarray, str, bool]:
    """A real TVM library of the build stage, and what it computes."""
    request = BuildRequest(model=Tiny().eval(), model_key={"tiny": 0}, image_shape=(3, 8, 8), batch_size=1,
                           algorithm={"conv": "direct", "layout": "NCHW", "format": "dense"},
                           software={"compiler": "tvm", "tuning": "untuned"},
                           device=create_device({"device": "host-cpu", "threads": 1}))
    build = compile_model(request, cache)
    return build.executable.run(IMAGES), f"build/{build.key}/model.so", build.hit


def json_value(cache: ArtifactCache, digits) -> tuple[dict, str, bool]:
    """A cached JSON value (how accuracies and peaks are kept)."""
    value, hit = cache.get_or_compute_json("accuracy", {"build": "b"}, lambda: {"accuracy": 0.8125, "samples": 48})
    return value, f"accuracy/{cache.key_for('accuracy', {'build': 'b'})}/value.json", hit


ENTRIES = {"checkpoint": checkpoint, "compressed model": compressed_model, "library": library, "JSON value": json_value}


def corrupt_entries(cache_root: Path) -> list[Path]:
    return sorted((cache_root / CORRUPT_DIR).iterdir()) if (cache_root / CORRUPT_DIR).exists() else []


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("kind", ENTRIES)
def test_a_corrupt_entry_is_moved_aside_logged_and_rebuilt_to_the_same_value(kind, corruption, digits, tmp_path,
                                                                             caplog):
    produce = ENTRIES[kind]
    original, relative, hit = produce(ArtifactCache(tmp_path), digits)
    assert not hit
    CORRUPTIONS[corruption](tmp_path / relative)
    damaged = (tmp_path / relative).read_bytes()

    with caplog.at_level(logging.WARNING, logger="dlas_dse.cache"):
        rebuilt, again, hit = produce(ArtifactCache(tmp_path), digits)  # a new object: as the next trial
    assert again == relative and not hit
    np.testing.assert_equal(rebuilt, original)
    stage, key, name = relative.split("/")
    (aside,) = corrupt_entries(tmp_path)
    assert aside.name.startswith(f"{stage}-{key}-") and (aside / name).read_bytes() == damaged
    reason = (aside / "reason.txt").read_text()
    assert name in reason and ("bytes" in reason if corruption == "truncated" else "sha256 differs" in reason)
    (warning,) = [r for r in caplog.records if r.name == "dlas_dse.cache"]
    assert warning.levelno == logging.WARNING and key in warning.getMessage() and name in warning.getMessage()

    _, _, hit = produce(ArtifactCache(tmp_path), digits)  # the rebuilt entry serves from now on
    assert hit and len(corrupt_entries(tmp_path)) == 1


def test_sizes_are_checked_on_every_read_contents_once_per_cache_object(tmp_path):
    cache = ArtifactCache(tmp_path)
    computed = []
    compute = lambda: computed.append(1) or {"accuracy": 0.5}  # noqa: E731
    cache.get_or_compute_json("accuracy", {"k": 1}, compute)
    value_file = cache.path("accuracy", cache.key_for("accuracy", {"k": 1})) / "value.json"
    assert cache.get_or_compute_json("accuracy", {"k": 1}, compute) == ({"accuracy": 0.5}, True)
    value_file.write_text('{"accuracy": 0.9}')  # same size, other contents: this object checked them already
    assert cache.get_or_compute_json("accuracy", {"k": 1}, compute) == ({"accuracy": 0.9}, True)
    assert ArtifactCache(tmp_path).get_or_compute_json("accuracy", {"k": 1}, compute) == ({"accuracy": 0.5}, False)
    value_file.write_text('{"accuracy": 0.75}')  # another size: seen by every read
    assert cache.get_or_compute_json("accuracy", {"k": 1}, compute) == ({"accuracy": 0.5}, False)
    assert len(computed) == 3 and len(corrupt_entries(tmp_path)) == 2


def test_unreadable_metadata_is_corrupt_too(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.get_or_compute_json("peak", {"cpu": "x"}, lambda: {"gflops": 10.0})
    (cache.path("peak", cache.key_for("peak", {"cpu": "x"})) / "meta.json").write_text("{not json")
    assert ArtifactCache(tmp_path).get_or_compute_json("peak", {"cpu": "x"}, lambda: {"gflops": 10.0}) == (
        {"gflops": 10.0}, False)
    (aside,) = corrupt_entries(tmp_path)
    assert "meta.json is unreadable" in (aside / "reason.txt").read_text()


TARGET = create_device({"device": "host-cpu", "threads": 1}).tvm_target()


def _matmul(size: int) -> tvm.IRModule:
    a, b = te.placeholder((size, size), name="a"), te.placeholder((size, size), name="b")
    k = te.reduce_axis((0, size), name="k")
    c = te.compute((size, size), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


def tuned_database(cache_root: Path, sizes: tuple[int, ...] = (8, 16)) -> TuningDatabase:
    """A real shared tuning database holding one record per matmul size (run time = size µs)."""
    database, private = TuningDatabase(ArtifactCache(cache_root), TARGET, 1), ms.database.MemoryDatabase()
    for size in sizes:
        mod = _matmul(size)
        schedule = tvm.s_tir.Schedule(mod)
        schedule.get_loops(schedule.get_sblock("c"))  # MetaSchedule ignores a record with an empty trace
        private.commit_tuning_record(ms.database.TuningRecord(
            schedule.trace, private.commit_workload(mod), [1e-6 * size], TARGET,
            ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    assert database.merge(private) == len(sizes)
    return database


def run_times(database: ms.database.Database) -> list[float]:
    return sorted(float(record.run_secs[0]) for record in database.get_all_tuning_records())


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_tuning_database_is_moved_aside_and_tuning_starts_again(corruption, tmp_path, caplog):
    original = run_times(tuned_database(tmp_path).open())
    assert original == pytest.approx([8e-6, 16e-6])
    database = TuningDatabase(ArtifactCache(tmp_path), TARGET, 1)
    CORRUPTIONS[corruption](database.directory / "records.json")
    with caplog.at_level(logging.WARNING, logger="dlas_dse.cache"):
        assert len(database.open()) == 0  # empty, not records MetaSchedule would half-read or misread
    (aside,) = corrupt_entries(tmp_path)
    assert aside.name.startswith(f"tuning-{database.key}-") and (aside / "records.json").exists()
    assert "records.json" in (aside / "reason.txt").read_text()
    assert any(database.key in r.getMessage() for r in caplog.records if r.name == "dlas_dse.cache")
    assert run_times(tuned_database(tmp_path).open()) == original  # tuned again: the same records
    assert len(corrupt_entries(tmp_path)) == 1


def test_every_merge_records_the_digest_a_later_open_checks(tmp_path):
    tuned_database(tmp_path, (8,))
    assert run_times(tuned_database(tmp_path, (16,)).open()) == pytest.approx([8e-6, 16e-6])
    assert corrupt_entries(tmp_path) == []


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlas_dse", "cache", "verify", *args], capture_output=True,
                          text=True, timeout=300)


def test_cache_verify_reports_corrupt_entries_and_repair_moves_them_aside(tmp_path):
    cache = ArtifactCache(tmp_path)
    for number in range(3):
        cache.get_or_compute_json("accuracy", {"n": number}, lambda: {"accuracy": 0.5})
    database = tuned_database(tmp_path)
    bad_value = cache.path("accuracy", cache.key_for("accuracy", {"n": 1}))
    flip(bad_value / "value.json")
    truncate(database.directory / "workloads.json")

    checked = cli("--cache", str(tmp_path))
    assert checked.returncode == 1, checked.stderr
    assert f"accuracy/{bad_value.name}: value.json has other contents" in checked.stdout
    assert f"tuning/{database.key}: workloads.json has" in checked.stdout
    assert "4 entries checked" in checked.stdout and "2 corrupt" in checked.stdout and "--repair" in checked.stdout
    assert corrupt_entries(tmp_path) == []  # only reported

    repaired = cli("--repair", "--cache", str(tmp_path))
    assert repaired.returncode == 0 and "moved to" in repaired.stdout
    assert sorted(p.name.rsplit("-", 1)[0] for p in corrupt_entries(tmp_path)) == [
        f"accuracy-{bad_value.name}", f"tuning-{database.key}"]
    assert all((p / "reason.txt").exists() for p in corrupt_entries(tmp_path))
    after = cli("--cache", str(tmp_path))
    assert after.returncode == 0 and "all intact" in after.stdout
    assert "no artifact cache" in cli("--cache", str(tmp_path / "missing")).stderr


SETTINGS = settings_with_defaults({
    "evaluation": {"batch_size": 16, "max_samples": 48},
    "measurement": {"warmup_runs": 1, "min_repeats": 3, "max_repeats": 10, "min_time_s": 0.05},
    "verification": {"samples": 2, "tolerance": 1e-3}})
CONFIG = {"dataset.name": "digits", "dataset.image_size": 32, "dataset.val_fraction": 0.2, "dataset.split_seed": 0,
          "model.architecture": "mobilenet_v2", "model.epochs": 1, "model.learning_rate": 0.05,
          "model.batch_size": 64, "model.seed": 0, "model.weights": "", "compression.technique": "none",
          "algorithm.conv": "direct", "software.compiler": "tvm", "software.tuning": "untuned",
          "hardware.device": "host-cpu", "hardware.threads": 1}


@pytest.mark.slow
def test_a_trial_rebuilds_a_corrupt_checkpoint_and_library_and_gets_the_same_results(tmp_path):
    first = run_trial(CONFIG, SETTINGS, str(tmp_path), timeout_s=900)
    train = tmp_path / "train" / first.attributes["training"]["checkpoint"]
    library = tmp_path / "build" / first.attributes["build"]["build_key"] / "model.so"
    written = json.loads((train / "meta.json").read_text())["files"]["checkpoint.pt"]["sha256"]
    flip(train / "checkpoint.pt")
    truncate(library)  # before integrity checks: SIGBUS in verify, and in every later trial

    second = run_trial(CONFIG, SETTINGS, str(tmp_path), timeout_s=900)
    assert second.attributes["cache_hits"] == {"train": False, "compress": True, "build": False,
                                                  "eval_build": True, "accuracy": True}
    assert json.loads((train / "meta.json").read_text())["files"]["checkpoint.pt"]["sha256"] == written
    # the rebuilt library computes what the first one did
    assert second.attributes["verification"] == first.attributes["verification"]
    assert {k: v for k, v in second.values.items() if k != "latency_ms"} == {
        k: v for k, v in first.values.items() if k != "latency_ms"}
    assert sorted(p.name.split("-")[0] for p in corrupt_entries(tmp_path)) == ["build", "train"]
    assert all((p / "reason.txt").read_text().strip() for p in corrupt_entries(tmp_path))
