"""MetaSchedule tuning: tuned builds match PyTorch, the per-target database is shared (a second
model with the same workloads measures nothing), and a task MetaSchedule cannot tune keeps its
default schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlas_dse.cache import ArtifactCache
from dlas_dse.stack.compiler import BuildRequest, compile_model
from dlas_dse.stack.hardware import host_cpu

TUNED = {"compiler": "tvm", "tuning": "metaschedule", "trials_per_task": 1, "max_trials": 0, "tuning_timeout_s": 0.0}


class Tiny(torch.nn.Module):
    """conv → ReLU → global average → linear: three tuning tasks."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def build(seed: int, cache: ArtifactCache, algorithm: dict, sparsity: float = 0.0):
    torch.manual_seed(seed)
    model = Tiny().eval()
    with torch.no_grad():
        model.conv.weight *= torch.rand_like(model.conv.weight) >= sparsity
    request = BuildRequest(model, {"seed": seed, "sparsity": sparsity}, (3, 8, 8), 1,
                           {"layout": "NCHW", "format": "dense", **algorithm}, TUNED, host_cpu({"threads": 2}))
    executable, record = compile_model(request, cache)
    images = np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(executable.run(images), expected, rtol=1e-4, atol=1e-5)
    return record["tuning"]


@pytest.mark.slow
def test_tuning_is_checked_and_shared_through_the_database(tmp_path):
    cache = ArtifactCache(tmp_path)
    first = build(0, cache, {"conv": "direct"})
    assert first["tasks"] == 3 and first["database_hits"] == 0 and first["tuned_tasks"] == 3
    assert first["measured_candidates"] == 3 and first["new_records"] >= 1
    # a task whose one candidate failed keeps its default schedule; the tuned ones are not rescheduled
    assert len(first["default_scheduled"]) == 3 - first["new_records"]
    second = build(1, cache, {"conv": "direct"})  # other weights, same workloads
    assert second["database_hits"] == 3 and second["tuned_tasks"] == 0 and second["measured_candidates"] == 0
    assert second["default_scheduled"] == first["default_scheduled"]


@pytest.mark.slow
def test_sparse_kernel_builds_and_runs_under_tuning(tmp_path):
    record = build(0, ArtifactCache(tmp_path), {"conv": "gemm", "format": "sparse"}, sparsity=0.7)
    assert record["tasks"] == 3
    # tuned, or left to its default schedule with the reason recorded
    for task, reason in record["default_schedule_tasks"].items():
        assert "sparse" in task and reason
