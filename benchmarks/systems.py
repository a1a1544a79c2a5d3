"""Layer 5 on this machine: is a compiler worth it? PyTorch eager, ONNX Runtime, TVM untuned and
TVM tuned by MetaSchedule at several budgets, side by side in one run.

resnet18 and mobilenet_v2 at 32×32 (CIFAR stems, random weights), float32 (and, with `--precisions
float32 int8`, int8: ONNX Runtime's static QDQ int8 and TVM's int8 for each untuned algorithm, both
calibrated on the same random images), batch 1, on host-cpu, each compiled by the project's own
compilers (the same builds a trial makes) and checked against PyTorch (TVM int8: its int8 PyTorch
reference, bit for bit) before it is timed. Every variant of a model is built first, then all are timed in
alternating rounds (`--rounds`, the order rotated each round; latency = median of the round
medians), so that this shared machine's drift slows them alike and the ratios hold. Also the
achieved GFLOP/s (the model's direct-convolution MACs over the latency: Winograd's figure is an
effective one, as it multiplies less) and the share of this machine's float32 peak (an FMA
microkernel at the same threads, `dlas_dse/stack/peak.py`), which a float32 kernel cannot exceed:
a share over 100 % is printed as a bug.

Tuning is the expensive part (seconds per measured candidate). Each budget has its own artifact
cache under results/benchmark-cache/systems/ (so that 64 trials per task is not served 16's
records), and a tuned build is cached: a rerun re-measures every budget already tuned and tunes
only the new ones. `--budgets` names the budgets to tune in this run (0: none). A variant that
fails to build or to match PyTorch is recorded with its reason and the others are timed.

    python benchmarks/systems.py [--models resnet18 mobilenet_v2] [--budgets 16 64 256]
        [--algorithms direct winograd auto] [--precisions float32 int8] [--threads 2] [--rounds 5]
        [--min-time 0.5] [--name systems]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, ResultsFile, interleaved_ms, random_model, succeeded

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.stack.compilers import BuildRequest, compile_model, reference_model  # noqa: E402
from dlas_dse.stack.compression import calibrate_input_scales  # noqa: E402
from dlas_dse.stack.devices import create_device  # noqa: E402
from dlas_dse.trial import check_against_pytorch  # noqa: E402

CACHE = ROOT / "results" / "benchmark-cache" / "systems"
DIRECT = {"conv": "direct", "layout": "NCHW", "format": "dense"}
IMAGES = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
CALIBRATION = np.random.default_rng(2).standard_normal((64, 3, 32, 32)).astype(np.float32)
INT8_TOLERANCE = {"tvm": 1e-6, "onnxruntime": 0.3}
"""Allowed error of an int8 build: TVM's against its int8 reference (the same integer arithmetic),
ONNX Runtime's against float32 (its own quantisation: the trial's tolerance for it)."""
UNTUNED = {"compiler": "tvm", "tuning": "untuned", "trials_per_task": 16, "max_trials": 0, "tuning_timeout_s": 0.0}


def _tuned_cache(conv: str, budget: int) -> Path:
    """The artifact cache of one algorithm at one budget (direct NCHW's keeps its older name)."""
    return CACHE / (f"budget-{budget}" if conv == "direct" else f"{conv}-budget-{budget}")


def _tuned_before() -> list[tuple[str, int]]:
    """(algorithm, budget) of every cache a tuned run left."""
    found = (re.fullmatch(r"(?:(\w+)-)?budget-(\d+)", path.name) for path in CACHE.glob("*budget-*"))
    return [(match[1] or "direct", int(match[2])) for match in found if match]


def variants(tune_budgets: list[int], algorithms: list[str],
             precisions: tuple[str, ...] = ("float32",)) -> dict[str, tuple[dict, dict, ArtifactCache, bool, str]]:
    """name → (algorithm, software, cache, may tune, precision): the peers, TVM untuned (direct,
    gemm and the other ``algorithms``; int8 too, and ONNX Runtime int8, when ``precisions`` has it),
    and TVM tuned (float32) with every algorithm at every budget that has a cache (re-measured) or
    is asked for (tuned now), NCHW dense."""
    untuned_cache = ArtifactCache(CACHE / "untuned")
    chosen = {"pytorch eager": (DIRECT, {"compiler": "pytorch"}, untuned_cache, False, "float32"),
              "onnxruntime": (DIRECT, {"compiler": "onnxruntime"}, untuned_cache, False, "float32")}
    if "int8" in precisions:
        chosen["onnxruntime int8"] = (DIRECT, {"compiler": "onnxruntime"}, untuned_cache, False, "int8")
    for conv in dict.fromkeys(["direct", "gemm", *algorithms]):
        for precision in precisions:
            suffix = "" if precision == "float32" else f" {precision}"
            chosen[f"tvm untuned {conv}{suffix}"] = ({**DIRECT, "conv": conv}, UNTUNED, untuned_cache, False, precision)
    asked = [(conv, budget) for conv in algorithms for budget in tune_budgets if budget > 0]
    for conv, budget in sorted(set(_tuned_before()) | set(asked), key=lambda pair: (pair[0] != "direct", pair)):
        software = {**UNTUNED, "tuning": "metaschedule", "trials_per_task": budget}
        name = f"tvm tuned {budget}/task" if conv == "direct" else f"tvm tuned {conv} {budget}/task"
        chosen[name] = ({**DIRECT, "conv": conv}, software, ArtifactCache(_tuned_cache(conv, budget)),
                        (conv, budget) in asked, "float32")
    return chosen


def int8_request(model, request: dict) -> dict:
    """The int8 part of a build request: scales calibrated on :data:`CALIBRATION`, and those
    images for ONNX Runtime to calibrate on."""
    return {**request, "precision": "int8", "calibration_images": CALIBRATION,
            "calibration": calibrate_input_scales(reference_model(model, "float32", None), torch.from_numpy(CALIBRATION))}


def build(architecture: str, algorithm: dict, software: dict, cache: ArtifactCache, may_tune: bool,
          threads: int, precision: str = "float32") -> tuple:
    """Build one variant (tuning only if ``may_tune``) and check it against PyTorch: its
    executable and its row (latency still to be measured)."""
    model = random_model(architecture)
    fields = {"model": model, "model_key": {"benchmark": "systems", "architecture": architecture},
              "image_shape": (3, 32, 32), "batch_size": 1, "algorithm": algorithm, "software": software,
              "device": create_device({"device": "host-cpu", "threads": threads}), "tune": may_tune}
    if precision == "int8":
        fields = int8_request(model, fields)
    started = time.perf_counter()
    built = compile_model(BuildRequest(**fields), cache)
    executable, record = built.executable, built.record
    seconds = time.perf_counter() - started
    if precision == "int8":
        reference = model if software["compiler"] == "onnxruntime" else \
            reference_model(model, "int8", fields["calibration"])
        check = check_against_pytorch(executable, reference, IMAGES, tolerance=INT8_TOLERANCE[software["compiler"]])
    else:
        check = check_against_pytorch(executable, model, IMAGES, tolerance=1e-3)
    row = {"macs": record["macs"], "max_abs_error": check["max_abs_error"], "build_seconds": seconds,
           "build_hit": record["hit"], "precision": precision}
    row.update({key: record[key] for key in ("convolutions_by_algorithm", "int8_layers", "float_layers")
                if key in record})
    tuning = record.get("tuning", {})
    if tuning.get("tasks"):
        row["tuning"] = {k: tuning.get(k) for k in ("tasks", "database_hits", "tuned_tasks", "measured_candidates",
                                                    "default_schedule_kept", "new_records", "seconds",
                                                    "default_scheduled", "tuning_error")}
        print(f"{architecture:<13} {software['trials_per_task']}/task: {row['tuning']['measured_candidates']} "
              f"candidates over {row['tuning']['tuned_tasks']} of {row['tuning']['tasks']} tasks in "
              f"{row['tuning']['seconds']:.0f} s, {row['tuning']['default_schedule_kept']} kept their default",
              flush=True)
    return executable, row


def built_row(timers: dict, name: str, *build_args) -> dict:
    """:func:`build` one variant and keep its timer in ``timers``: its row."""
    executable, row = build(*build_args)
    timers[name] = functools.partial(executable.time_runs, IMAGES[:1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[16, 64, 256],
                        help="trials per task to tune in this run (0: tune nothing, re-measure what is tuned)")
    parser.add_argument("--algorithms", nargs="+", default=["direct"],
                        help="layer-4 algorithms (NCHW, dense) to tune at the budgets, e.g. direct winograd")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=("float32", "int8"),
                        help="untuned TVM and ONNX Runtime at each (tuned builds are float32)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds in which every variant is timed")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed runs per variant per round")
    parser.add_argument("--name", default="systems", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    host = create_device({"device": "host-cpu", "threads": args.threads})
    host.configure_runtime()
    results: dict = {"models": {}, "protocol": f"every variant of a model timed in {args.rounds} alternating "
                     f"rounds of >= {args.min_time} s (2 warm-up runs each); latency: median of the round medians"}
    out = ResultsFile(args.name, results, args.threads)
    results["peak"] = peak = host.peak(ArtifactCache(CACHE / "untuned"))
    print(f"peak {peak['gflops']:.1f} GFLOP/s ({peak['method']})", flush=True)
    for architecture in args.models:
        rows = results["models"][architecture] = {}
        timers = {}
        for name, (algorithm, software, cache, may_tune, precision) in variants(
                args.budgets, args.algorithms, tuple(args.precisions)).items():
            out.attempt(rows, name, functools.partial(
                built_row, timers, name, architecture, algorithm, software, cache, may_tune, args.threads, precision))
        for name, timing in interleaved_ms(timers, args.rounds, args.min_time).items():
            row = rows[name]
            row.update(timing, gflops=2 * row["macs"] / timing["latency_ms"] / 1e6)
            if row["precision"] == "float32":  # the peak is float32's: int8 dot products may exceed it
                row["percent_of_peak"] = 100 * row["gflops"] / peak["gflops"]
            share = f"({row['percent_of_peak']:4.1f}% of peak)" if "percent_of_peak" in row else "(int8 ops)      "
            print(f"{architecture:<13} {name:<31} {row['latency_ms']:8.2f} ms  {row['gflops']:6.1f} GFLOP/s "
                  f"{share}  rounds: " + " ".join(f"{ms:.2f}" for ms in row["rounds_ms"]), flush=True)
            if row.get("percent_of_peak", 0) > 100:
                print(f"BUG: {name} runs over the peak (an under-read peak, or fewer multiplications than the "
                      "MACs counted)", flush=True)
        reference = succeeded(rows).get("onnxruntime", {}).get("latency_ms")
        for row in succeeded(rows).values():
            row["vs_onnxruntime"] = row["latency_ms"] / reference if reference else None
        out.save(finished=False)
    results["model"] = ("32x32 CIFAR stems, random weights, float32 (int8 where named), batch 1, NCHW dense "
                        "(direct unless named)")
    path = out.save()
    for architecture, rows in results["models"].items():
        print(f"{architecture}: " + ", ".join(f"{name} {row['vs_onnxruntime']:.2f}x" for name, row in
                                              succeeded(rows).items() if row["vs_onnxruntime"])
              + " of ONNX Runtime's latency")
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
