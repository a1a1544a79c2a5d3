"""Run one configuration through the whole stack, isolated in a child process.

:func:`execute` composes the six layers through their registries (it knows no technique by
name). :func:`run_trial` runs it in a child process with a timeout, so that a crash, hang or
out-of-memory kill in generated code becomes a :class:`TrialFailure` with its reason.
"""

from __future__ import annotations

import copy
import multiprocessing
import multiprocessing.forkserver
import os
import platform
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Callable, Iterator

import numpy as np
import optuna
import psutil
import torch
import tvm
from tqdm import tqdm

from dlas_dse.cache import ArtifactCache, code_fingerprint
from dlas_dse.space import Config, nest
from dlas_dse.stack.compilers import (Build, BuildRequest, Executable, compile_model, float64_reference,
                                     reference_model)
from dlas_dse.stack.compression import Compressed, compress
from dlas_dse.stack.datasets import Dataset, load_dataset
from dlas_dse.stack.devices import Device, create_device
from dlas_dse.stack.measurement import measure_latency
from dlas_dse.stack.models import count_parameters, trained_model
from dlas_dse.stack.tuning import TuningAllowance

STAGES = ("dataset", "train", "compress", "compile", "verify", "measure", "accuracy")
"""The stages of a trial, in order; each one's wall time is recorded as ``time_<stage>_s``."""


@dataclass
class TrialResult:
    """A finished trial: its value of every objective (``dlas_dse.objectives.OBJECTIVES``), and the attributes stored
    with it (configuration, stage records and times, provenance)."""

    values: dict[str, float]
    attributes: dict


class TrialFailure(Exception):
    """A trial that could not produce objectives; ``str()`` is the reason recorded in storage."""


class CorrectnessError(TrialFailure):
    """The compiled artifact's output differs from PyTorch's beyond the tolerance."""


ROUNDING_FACTOR = 10.0
"""How many times the model's sensitivity to float32 rounding the compiled output may differ by."""


def _reference_logits(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return model(torch.from_numpy(batch).to(dtype)).float().numpy()


def _float64_logits(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(batch).double()).numpy()


def float32_perturbed(float64_model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``float64_model`` with every parameter changed by a random relative amount up to
    float32's epsilon (fixed seed): float32 arithmetic in any summation order computes the exact
    result of a model perturbed about this much, so the outputs' distance measures its rounding."""
    perturbed = copy.deepcopy(float64_model)
    generator = torch.Generator().manual_seed(0)
    epsilon = float(np.finfo(np.float32).eps)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            noise = torch.rand(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.mul_(1 + epsilon * (2 * noise - 1))
    return perturbed


def check_against_pytorch(executable: Executable, model: torch.nn.Module, images: np.ndarray,
                          tolerance: float, float64_model: torch.nn.Module | None = None) -> dict:
    """Compare the executable with PyTorch on ``images``; raise :class:`CorrectnessError` when the
    max absolute difference exceeds ``tolerance * max(1, max |PyTorch|)`` plus, given the model in
    float64, ``ROUNDING_FACTOR`` times its output's sensitivity to float32 rounding (recorded as
    ``rounding_sensitivity``): an ill-conditioned model rounds that much in any summation order."""
    perturbed = float32_perturbed(float64_model) if float64_model is not None else None
    worst, agree, reference_scale, sensitivity = 0.0, 0, 1.0, 0.0
    for start in range(0, len(images), executable.batch_size):
        batch = images[start:start + executable.batch_size]
        if len(batch) < executable.batch_size:
            break
        compiled, reference = executable.run(batch), _reference_logits(model, batch)
        worst = max(worst, float(np.abs(compiled - reference).max()))
        reference_scale = max(reference_scale, float(np.abs(reference).max()))
        agree += int((compiled.argmax(1) == reference.argmax(1)).sum())
        if perturbed is not None:
            moved = _float64_logits(perturbed, batch) - _float64_logits(float64_model, batch)
            sensitivity = max(sensitivity, float(np.abs(moved).max()))
    checked = len(images) - len(images) % executable.batch_size
    record = {"max_abs_error": worst, "allowed_error": tolerance * reference_scale + ROUNDING_FACTOR * sensitivity,
              "rounding_sensitivity": sensitivity if perturbed is not None else None,
              "samples": checked, "top1_agreement": agree / max(1, checked)}
    if checked == 0:
        raise TrialFailure(f"no image to check the compiled artifact with (batch {executable.batch_size})")
    if worst > record["allowed_error"]:
        rounding = f" (float32 rounding moves it by {sensitivity:.3g})" if perturbed is not None else ""
        raise CorrectnessError(f"compiled output differs from PyTorch: max |error| {worst:.3g} > allowed "
                               f"{record['allowed_error']:.3g} on {checked} validation images{rounding}")
    return record


def evaluate_accuracy(executable: Executable, model: torch.nn.Module, images: np.ndarray,
                      labels: np.ndarray, tolerance: float, float64_model: torch.nn.Module | None = None) -> dict:
    """Top-1 accuracy of the compiled artifact; its first batch is also checked against PyTorch."""
    check = check_against_pytorch(executable, model, images[:executable.batch_size], tolerance, float64_model) \
        if len(images) >= executable.batch_size else None
    correct = 0
    for start in range(0, len(images), executable.batch_size):
        batch = images[start:start + executable.batch_size]
        count = len(batch)
        if count < executable.batch_size:
            batch = np.concatenate([batch, np.zeros((executable.batch_size - count, *batch.shape[1:]),
                                                    batch.dtype)])
        predictions = executable.run(batch)[:count].argmax(1)
        correct += int((predictions == labels[start:start + count]).sum())
    return {"accuracy": correct / len(labels), "samples": len(labels), "first_batch_check": check}


def versions() -> dict:
    """Versions of the libraries a result depends on."""
    from dlas_dse import __version__

    return {"dlas_dse": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "tvm": tvm.__version__, "optuna": optuna.__version__, "numpy": np.__version__}


def build_request(layers: dict, dataset: Dataset, compressed: Compressed, software: dict, device: Device,
                  batch_size: int, tune: bool) -> BuildRequest:
    """What a trial compiles: the compressed model for ``device`` at ``batch_size``."""
    return BuildRequest(model=compressed.model, model_key={"compressed": compressed.key},
                        image_shape=dataset.image_shape, batch_size=batch_size, algorithm=layers["algorithm"],
                        software=software, device=device, precision=compressed.precision,
                        calibration=compressed.calibration, calibration_images=compressed.calibration_images,
                        tune=tune)


def rebuild_latency_executable(config: Config, cache_dir: str, device: Device, build_key: str) -> Executable:
    """The latency artifact a finished trial measured, from the artifact cache (every stage a cache
    hit), on ``device``; raises TrialFailure if what the stages give is not the build ``build_key``."""
    layers = nest(config)
    cache = ArtifactCache(cache_dir)
    dataset = load_dataset(layers["dataset"])
    model, training = trained_model(layers["model"], dataset, layers["dataset"], cache)
    compressed = compress(model, dataset, layers["compression"], layers["model"], training["checkpoint"], cache)
    for tune in (True, False):  # tuned unless the study's tuning cap stopped it
        build = compile_model(build_request(layers, dataset, compressed, layers["software"], device, 1, tune), cache)
        if build.key == build_key:
            return build.executable
    raise TrialFailure(f"the cached stages no longer give the build {build_key} (code or cache changed)")


def execute(config: Config, settings: dict, cache_dir: str, allowance: TuningAllowance = TuningAllowance(),
            report: Callable[[str], None] = lambda stage: None) -> TrialResult:
    """Run ``config`` through every layer in this process, tuning within the study's ``allowance``."""
    layers = nest(config)
    cache = ArtifactCache(cache_dir)
    times: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        report(name)
        started = time.perf_counter()
        yield
        times[f"time_{name}_s"] = time.perf_counter() - started

    with stage("dataset"):
        dataset: Dataset = load_dataset(layers["dataset"])
    with stage("train"):
        model, training = trained_model(layers["model"], dataset, layers["dataset"], cache)
    with stage("compress"):
        compressed = compress(model, dataset, layers["compression"], layers["model"], training["checkpoint"], cache)
    device = create_device(layers["hardware"])
    device.configure_runtime()
    evaluation, verification = settings["evaluation"], dict(settings["verification"])
    software, may_tune, tuning_capped = allowance.apply(layers["software"])
    verification["tolerance"] = max(verification["tolerance"], compressed.tolerance)

    def build(batch_size: int, tune: bool) -> Build:
        return compile_model(build_request(layers, dataset, compressed, software, device, batch_size, tune), cache)

    with stage("compile"):
        latency_build = build(1, tune=may_tune)
        eval_build = build(evaluation["batch_size"], tune=False)
    with stage("verify"):
        # a compiler whose arithmetic differs from the precision's reference names what it matches
        verified_against = latency_build.verified_against or compressed.precision
        reference = reference_model(compressed.model, verified_against, compressed.calibration)
        float64 = float64_reference(compressed.model, verified_against)
        verification["tolerance"] = max(verification["tolerance"], latency_build.tolerance)
        check = check_against_pytorch(latency_build.executable, reference,
                                      dataset.val_x[:verification["samples"]], verification["tolerance"], float64)
        check["ran_on"] = device.ran_on()
    with stage("measure"):
        sample, protocol = dataset.val_x[:1], dict(settings["measurement"])
        cores = device.pin(protocol.pop("cpu_affinity"))
        latency = measure_latency(lambda n: latency_build.executable.time_runs(sample, n), **protocol,
                                  counters=latency_build.executable.cpu_counters())
    with stage("accuracy"):
        images, labels = dataset.validation_subset(evaluation["max_samples"])
        accuracy, accuracy_hit = cache.get_or_compute_json(
            "accuracy", {"build": eval_build.key, "dataset": layers["dataset"],
                         "max_samples": evaluation["max_samples"],
                         "code": code_fingerprint(evaluate_accuracy, check_against_pytorch, float32_perturbed,
                                                  reference_model, float64_reference)},
            lambda: evaluate_accuracy(eval_build.executable, reference, images, labels, verification["tolerance"],
                                      float64))

    achieved_gflops = 2 * latency_build.macs / (latency.latency_ms * 1e6)
    peak = device.peak(cache)
    attributes = {
        **times,
        "config": config,
        "cache_hits": {"train": training["hit"], "compress": compressed.record["hit"], "build": latency_build.hit,
                       "eval_build": eval_build.hit, "accuracy": accuracy_hit},
        "training": training, "compression": compressed.record,
        "build": latency_build.record, "eval_build": eval_build.record,
        "latency": {**latency.as_dict(), "cores": cores}, "latency_noisy": latency.noisy, "verification": check,
        "tuning_capped": tuning_capped,
        "time_tune_s": 0.0 if latency_build.hit else latency_build.record.get("tuning", {}).get("seconds", 0.0),
        "accuracy_samples": accuracy["samples"], "accuracy_first_batch_check": accuracy["first_batch_check"],
        "macs": latency_build.macs, "parameters": count_parameters(compressed.model),
        "achieved_gflops": achieved_gflops, "peak": peak,
        "percent_of_peak": 100 * achieved_gflops / peak["gflops"] if peak else None,
        "target": device.target, "device": device.name, "threads": device.threads,
        "device_kind": device.kind, "emulated": device.emulated, "ran_on": device.ran_on(),
        "cpu_model": device.description, "versions": versions(),
        "dataset_sizes": {"train": len(dataset.train_y), "validation": len(dataset.val_y)},
    }
    values = {"accuracy": accuracy["accuracy"], "latency_ms": latency.latency_ms,
              "size_bytes": float(latency_build.deployed_bytes)}
    return TrialResult(values, attributes)


# --------------------------------------------------------------------------- child process

def _exit_when_orphaned(parent_pid: int) -> None:
    """End this trial process as soon as the study process that started it is gone."""

    def watch() -> None:
        while psutil.pid_exists(parent_pid):
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def use_thread_lock_for_progress_bars() -> None:
    """Give tqdm a thread lock instead of its default multiprocessing one, a named semaphore that a
    process leaks when it ends by ``os._exit`` (as a trial does; torch.export draws a bar)."""
    tqdm.set_lock(threading.RLock())


def _child(config: Config, settings: dict, cache_dir: str, allowance: TuningAllowance, messages: Connection,
           parent_pid: int) -> None:
    messages.send(("started", time.time()))
    use_thread_lock_for_progress_bars()
    _exit_when_orphaned(parent_pid)
    try:
        result = execute(config, settings, cache_dir, allowance, report=lambda stage: messages.send(("stage", stage)))
        messages.send(("result", result))
    except BaseException as error:  # noqa: BLE001  (everything goes back to the parent as a reason)
        messages.send(("error", f"{type(error).__name__}: {error}", traceback.format_exc()))
    messages.close()
    os._exit(0)  # skip interpreter teardown (PyTorch, TVM): the result has been delivered


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (likely out of memory)" if name == "SIGKILL" else ""
        return f"crashed with {name}{hint}"
    return f"exited with code {exitcode} without a result"


def _context() -> multiprocessing.context.BaseContext:
    """A fork server that has already imported the stack, so each trial starts in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dlas_dse.trial"])
    return context


def start_worker_server() -> None:
    """Start the fork server now (it imports PyTorch and TVM once, in the background)."""
    _context()
    multiprocessing.forkserver.ensure_running()


def run_trial(config: Config, settings: dict, cache_dir: str, timeout_s: float,
              allowance: TuningAllowance = TuningAllowance(),
              on_stage: Callable[[str], None] = lambda stage: None) -> TrialResult:
    """Run ``config`` in a child process; raises :class:`TrialFailure` on error, crash or timeout.

    The attribute ``time_worker_start_s`` is how long the child took to start (seconds, large
    only for the first trial of a process, while the fork server imports the stack)."""
    context = _context()
    messages, child_end = context.Pipe(duplex=False)  # a pipe, unlike a queue, holds no semaphores
    process = context.Process(target=_child, args=(config, settings, cache_dir, allowance, child_end, os.getpid()))
    requested = time.time()
    process.start()
    child_end.close()  # the child's copy alone keeps the pipe open: EOF means the child is gone
    deadline = time.monotonic() + timeout_s
    current, worker_start_s = "starting", 0.0
    try:
        while True:
            if not messages.poll(0.2):
                if time.monotonic() > deadline:
                    raise TrialFailure(f"timed out after {timeout_s:g} s in stage {current}")
                continue
            try:
                kind, *payload = messages.recv()
            except EOFError:
                process.join()
                raise TrialFailure(f"{_describe_exit(process.exitcode)} in stage {current}") from None
            if kind == "started":
                worker_start_s = payload[0] - requested
            elif kind == "stage":
                current = payload[0]
                on_stage(current)
            elif kind == "result":
                payload[0].attributes["time_worker_start_s"] = worker_start_s
                return payload[0]
            else:
                message, trace = payload
                print(trace, file=sys.stderr)
                raise TrialFailure(f"{message} (in stage {current})")
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        messages.close()
