"""What the benchmark scripts share: random-weight models, the latency protocol, saving results."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlas_dse.registry import MODELS  # noqa: E402
from dlas_dse.stack.hardware import cpu_model  # noqa: E402
from dlas_dse.stack.measurement import measure_latency  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def random_model(architecture: str, num_classes: int = 10, image_size: int = 32) -> torch.nn.Module:
    """A registry model (CIFAR stem at 32×32) in eval mode with random weights and random
    BatchNorm statistics (so that folding BatchNorm is not a no-op)."""
    torch.manual_seed(0)
    model = MODELS.get(architecture).function(num_classes, image_size)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def median_ms(time_runs: Callable[[int], list[float]], min_time_s: float) -> float:
    """The project's latency protocol (2 warm-up runs, at least 5 timed runs and ``min_time_s``
    seconds): the median in milliseconds."""
    return measure_latency(time_runs, warmup_runs=2, min_repeats=5, max_repeats=2000,
                           min_time_s=min_time_s).median_ms


def interleaved_ms(timers: dict[str, Callable[[int], list[float]]], rounds: int,
                   min_time_s: float) -> dict[str, dict]:
    """Time every runner of ``timers`` in ``rounds`` alternating rounds (the order rotated each
    round), each round with :func:`median_ms` over ``min_time_s`` seconds, so that a machine
    that drifts slows all of them alike: name → median of the round medians and the rounds."""
    names, rounds_ms = list(timers), {name: [] for name in timers}
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            rounds_ms[name].append(median_ms(timers[name], min_time_s))
    return {name: {"latency_ms": float(np.median(ms)), "rounds_ms": ms} for name, ms in rounds_ms.items()}


def digits_space(description: str, models: list[str], layers: str) -> str:
    """A search space on digits at 32×32 over ``models`` (2 training epochs); ``layers`` is the
    YAML of the compression, algorithm, software and hardware layers."""
    return (f"description: {description}\ndataset:\n  name: digits\n  image_size: 32\nmodel:\n"
            f"  architecture: {{choices: {list(models)}}}\n  epochs: 2\n{layers}")


def grid_study(description: str, space: str, sampler: str = "grid") -> str:
    """A study over ``space`` with the benchmarks' evaluation (180 images) and measurement protocol."""
    return (f"description: {description}\nspace: {space}\nsampler: {sampler}\nseed: 0\ntrial_timeout_s: 3600\n"
            "evaluation: {batch_size: 16, max_samples: 180}\n"
            "measurement: {warmup_runs: 1, min_repeats: 5, min_time_s: 0.5}\n")


def write_project(project: Path, files: dict[str, str]) -> None:
    """Write ``files`` (path relative to ``project`` → YAML text) into a project folder."""
    for relative, text in files.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def save(name: str, results: dict, threads: int, started: float) -> Path:
    """Write ``results`` with the machine's description to ``benchmarks/results/<name>.json``."""
    results.update({"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
                    "seconds": time.perf_counter() - started, "date": time.strftime("%Y-%m-%d %H:%M")})
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=1))
    return path
