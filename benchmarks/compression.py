"""Accuracy, deployed size and untuned TVM latency of every compression technique, side by side.

For resnet18 and mobilenet_v2 on digits (32x32): none, weight_pruning {0.5, 0.8, 0.9, 0.95}
(dense, and at 0.9 also in the sparse CSR format), channel_pruning {0.25, 0.5}, int8 and fp16,
each a whole trial in its own process (train once, compress + fine-tune, compile, verify against
PyTorch, measure, accuracy from the compiled artifact). A configuration that fails is recorded
with its reason and the others go on. Then every model's built artifacts are timed again side by
side, in alternating rounds in one process (so that a drift of the machine hits all alike): the
speed-ups are ratios of those figures, with the spread of the per-round ratios.

    python benchmarks/compression.py [--models resnet18 mobilenet_v2] [--compressions none int8]
        [--max-samples 180] [--rounds 5] [--name compression]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np
from common import ROOT, ResultsFile, interleaved_ms, succeeded

from dlas_dse.config import settings_with_defaults  # noqa: E402
from dlas_dse.space import nest  # noqa: E402
from dlas_dse.stack.datasets import load_dataset  # noqa: E402
from dlas_dse.stack.devices import create_device  # noqa: E402
from dlas_dse.trial import rebuild_latency_executable, run_trial  # noqa: E402

TRIAL_TIMEOUT_S = 3600
FINE_TUNE = {"compression.finetune_epochs": 2, "compression.finetune_learning_rate": 0.01}
VARIANTS = {
    "none": {"compression.technique": "none"},
    **{f"weight_pruning {s}": {"compression.technique": "weight_pruning", "compression.sparsity": s,
                               "compression.max_layer_sparsity": max(0.95, s), **FINE_TUNE}
       for s in (0.5, 0.8, 0.9, 0.95)},
    "weight_pruning 0.9 sparse": {"compression.technique": "weight_pruning", "compression.sparsity": 0.9,
                                  "compression.max_layer_sparsity": 0.95, **FINE_TUNE, "algorithm.format": "sparse"},
    **{f"channel_pruning {r}": {"compression.technique": "channel_pruning", "compression.ratio": r, **FINE_TUNE}
       for r in (0.25, 0.5)},
    "int8": {"compression.technique": "int8", "compression.calibration_images": 512},
    "fp16": {"compression.technique": "fp16"},
}


def config(architecture: str, variant: dict) -> dict:
    return {"dataset.name": "digits", "dataset.image_size": 32, "dataset.val_fraction": 0.2,
            "dataset.split_seed": 0, "model.architecture": architecture, "model.epochs": 3,
            "model.learning_rate": 0.05, "model.batch_size": 64, "model.seed": 0, "model.weights": "",
            "algorithm.conv": "direct", **variant, "software.compiler": "tvm", "software.tuning": "untuned",
            "hardware.device": "host-cpu", "hardware.threads": os.cpu_count()}


def run(architecture: str, name: str, settings: dict, cache: str) -> dict:
    """One configuration as a trial in a child process: its row."""
    started = time.perf_counter()
    result = run_trial(config(architecture, VARIANTS[name]), settings, cache, TRIAL_TIMEOUT_S)
    attrs, values = result.attributes, result.values
    print(f"{architecture:<13} {name:<20} accuracy {values['accuracy']:.3f}  "
          f"size {values['size_bytes'] / 1e6:7.2f} MB  latency {values['latency_ms']:8.2f} ms", flush=True)
    return {"model": architecture, "compression": name, **values,
            "latency_iqr_ms": attrs["latency"]["iqr_ms"], "runs": attrs["latency"]["runs"],
            "config": attrs["config"], "build_key": attrs["build"]["build_key"],
            "verification": attrs["verification"],
            "compression_record": {k: v for k, v in attrs["compression"].items() if k != "calibration"},
            "trial_seconds": time.perf_counter() - started}


def side_by_side(rows: dict, architecture: str, cache: str, rounds: int) -> dict:
    """The model's measured configurations timed again in alternating rounds: label → the median of
    the round figures and the rounds (and the same for the ratio to ``none`` where it was built)."""
    measured = {label: row for label, row in succeeded(rows).items() if row["model"] == architecture}
    if not measured:
        return {}
    device = create_device({"device": "host-cpu", "threads": os.cpu_count()})
    device.configure_runtime()
    sample = load_dataset(nest(next(iter(measured.values()))["config"])["dataset"]).val_x[:1]
    timers = {}
    for label, row in measured.items():
        executable = rebuild_latency_executable(row["config"], cache, device, row["build_key"])
        timers[label] = functools.partial(executable.time_runs, sample)
    timed = interleaved_ms(timers, rounds, min_time_s=1.0)
    base = timed.get(f"{architecture} none")
    for figures in timed.values():
        if base:
            ratios = [b / r for b, r in zip(base["rounds_ms"], figures["rounds_ms"])]
            figures["speedup"], figures["speedup_range"] = float(np.median(ratios)), [min(ratios), max(ratios)]
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--compressions", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--max-samples", type=int, default=180, help="validation images for accuracy")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the side-by-side timing")
    parser.add_argument("--cache", default=str(ROOT / "results" / "cache"))
    parser.add_argument("--name", default="compression", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    settings = settings_with_defaults({
        "evaluation": {"batch_size": 16, "max_samples": args.max_samples},
        "measurement": {"warmup_runs": 2, "min_repeats": 5, "max_repeats": 200, "min_time_s": 1.0},
        "verification": {"samples": 4, "tolerance": 1e-3}})
    rows: dict = {}
    out = ResultsFile(args.name, {"rows": rows, "accuracy_samples": args.max_samples}, os.cpu_count())
    for architecture in args.models:
        for name in args.compressions:
            out.attempt(rows, f"{architecture} {name}",
                        functools.partial(run, architecture, name, settings, args.cache))
    for architecture in args.models:
        for label, figures in side_by_side(rows, architecture, args.cache, args.rounds).items():
            rows[label]["side_by_side"] = figures
    path = out.save()
    print(f"\n| model | compression | accuracy | size (MB) | latency in the trial (ms) | side by side (ms) | "
          f"vs none (range over {args.rounds} rounds) |\n|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        if "side_by_side" not in row:
            print(f"| {label.replace(' ', ' | ', 1)} | failed: {row.get('failed', 'not re-timed')} | | | | |")
            continue
        figures = row["side_by_side"]
        speedup = (f"{figures['speedup']:.2f}x ({figures['speedup_range'][0]:.2f}-{figures['speedup_range'][1]:.2f})"
                   if "speedup" in figures else "-")
        print(f"| {row['model']} | {row['compression']} | {row['accuracy']:.3f} | {row['size_bytes'] / 1e6:.2f} | "
              f"{row['latency_ms']:.2f} | {figures['latency_ms']:.2f} | {speedup} |")
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
