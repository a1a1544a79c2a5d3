"""What the benchmark scripts share: random-weight models, the latency protocol, results files that
record a failed configuration and go on."""

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
# the processes a benchmark starts (the trials' fork server, the CLI) import this tree too, not
# another checkout of dlas_dse that the interpreter has installed
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from dlas_dse.registry import MODELS  # noqa: E402
from dlas_dse.stack.devices import cpu_model  # noqa: E402
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


class ResultsFile:
    """A benchmark's ``benchmarks/results/<name>.json``: written after every configuration
    (``finished: false``) and at the end (``finished: true``), so a killed run keeps what it measured."""

    def __init__(self, name: str, results: dict, threads: int):
        self.name, self.results, self.threads, self.started = name, results, threads, time.perf_counter()

    def attempt(self, rows: dict, label: str, run: Callable[[], dict]) -> dict:
        """``rows[label] = run()``; a configuration that fails is recorded as ``{"failed": reason}``
        and printed, and the benchmark goes on. Saves the file either way."""
        try:
            rows[label] = run()
        except Exception as error:  # noqa: BLE001  (any failure of one configuration is its result)
            rows[label] = {"failed": f"{type(error).__name__}: {error}"}
            print(f"{label}: FAILED {rows[label]['failed']}", flush=True)
        self.save(finished=False)
        return rows[label]

    def earlier_rows(self, key: str) -> dict:
        """The configurations that succeeded under ``key`` in this benchmark's results file as an
        earlier run left it (none if there is no file): what ``--resume`` keeps."""
        path = RESULTS / f"{self.name}.json"
        return succeeded(json.loads(path.read_text()).get(key, {})) if path.is_file() else {}

    def save(self, finished: bool = True) -> Path:
        """Write the results with the machine's description."""
        self.results.update({"cpu": cpu_model(), "cores": os.cpu_count(), "threads": self.threads,
                             "seconds": time.perf_counter() - self.started, "finished": finished,
                             "date": time.strftime("%Y-%m-%d %H:%M")})
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(self.results, indent=1))
        return path


def succeeded(rows: dict) -> dict:
    """The rows of ``rows`` whose configuration did not fail."""
    return {label: row for label, row in rows.items() if "failed" not in row}
