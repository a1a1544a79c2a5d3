"""``algorithm.conv: auto``: every convolution of resnet18 gets the algorithm its measured kernel
times favour on this device, says why, and the build matches PyTorch; the table of kernel times is
measured once per shape and device, reused by later builds and re-measured after a code change."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from dlas_dse.cache import ArtifactCache
from dlas_dse.registry import MODELS
from dlas_dse.stack.algorithms import auto
from dlas_dse.stack.compilers import BuildRequest, compile_model
from dlas_dse.stack.devices import create_device
from dlas_dse.trial import check_against_pytorch

UNTUNED = {"compiler": "tvm", "tuning": "untuned", "trials_per_task": 16, "max_trials": 0, "tuning_timeout_s": 0.0}
AUTO = {"conv": "auto", "layout": "NCHW", "format": "dense", "tile": 4, "channel_tile": 16, "spatial_tile": 8}


@pytest.fixture(scope="module")
def device():
    # two threads, as every later test in this process asks: TVM sizes its thread pool at first use
    device = create_device({"device": "host-cpu", "threads": 2})
    device.configure_runtime()
    return device


def build(model, key: str, device, cache: ArtifactCache) -> dict:
    build = compile_model(BuildRequest(model=model, model_key={"test": key}, image_shape=(3, 32, 32), batch_size=1,
                                       algorithm=AUTO, software=UNTUNED, device=device), cache)
    images = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert check_against_pytorch(build.executable, model, images, tolerance=1e-3)["max_abs_error"] < 1e-3
    return build.record


def table_entries(cache: ArtifactCache) -> set[str]:
    return {path.name for path in (cache.root / "kernel-times").iterdir() if not path.name.startswith(".")}


def test_auto_gives_each_resnet18_convolution_its_fastest_algorithm_and_reuses_the_table(tmp_path, device, monkeypatch):
    torch.manual_seed(0)
    model = MODELS.get("resnet18").function(10, 32).eval()
    cache = ArtifactCache(tmp_path)
    record = build(model, "first", device, cache)
    convolutions = record["convolutions"]
    distinct = {c["conv"] for c in convolutions}
    assert len(table_entries(cache)) == len(distinct)  # one measurement per shape, not per layer
    for conv in convolutions:
        times = dict(part.rsplit(" ", 2)[:2] for part in conv["why"].removeprefix("fastest here: ").split(", "))
        assert conv["algorithm"] == min(times, key=lambda name: float(times[name]))
        assert set(times) >= {"direct", "gemm"}
    chosen = {c["conv"]: c["algorithm"] for c in convolutions}
    assert len(set(chosen.values())) >= 2, f"one algorithm for every shape: {chosen}"

    torch.manual_seed(1)  # another model of the same shapes: a new build, the same kernel table
    before = table_entries(cache)
    build(MODELS.get("resnet18").function(10, 32).eval(), "second", device, cache)
    assert table_entries(cache) == before

    spec = auto.ConvSpec(1, 8, 8, 8, 8, 3, 3, padding=(1, 1, 1, 1))
    weight, table = np.ones((8, 8, 3, 3), np.float32), auto.KernelTimes(device, cache)
    table.times(spec, weight, AUTO)
    before = table_entries(cache)
    (tmp_path / "layer4_change.py").write_text("CHANGED = True\n")  # a change to layer 4's code
    changed = types.ModuleType("layer4_change")
    changed.__file__ = str(tmp_path / "layer4_change.py")
    monkeypatch.setattr(auto, "layer4_modules", lambda original=auto.layer4_modules: [*original(), changed])
    table.times(spec, weight, AUTO)
    assert len(table_entries(cache) - before) == 1  # measured anew
