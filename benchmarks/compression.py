"""Accuracy, deployed size and untuned TVM latency of every compression technique, side by side.

For resnet18 and mobilenet_v2 on digits (32x32): none, weight_pruning {0.5, 0.8, 0.95},
channel_pruning {0.25, 0.5}, int8 and fp16, each a whole trial in its own process (train once,
compress + fine-tune, compile, verify against PyTorch, measure, accuracy from the compiled
artifact). A configuration that fails is recorded with its reason and the others go on.

    python benchmarks/compression.py [--models resnet18 mobilenet_v2] [--compressions none int8]
        [--max-samples 180] [--name compression]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

from common import ROOT, ResultsFile, succeeded

from dlas_dse.config import settings_with_defaults  # noqa: E402
from dlas_dse.trial import run_trial  # noqa: E402

TRIAL_TIMEOUT_S = 3600
FINE_TUNE = {"compression.finetune_epochs": 2, "compression.finetune_learning_rate": 0.01}
VARIANTS = {
    "none": {"compression.technique": "none"},
    **{f"weight_pruning {s}": {"compression.technique": "weight_pruning", "compression.sparsity": s,
                               "compression.max_layer_sparsity": max(0.95, s), **FINE_TUNE}
       for s in (0.5, 0.8, 0.95)},
    **{f"channel_pruning {r}": {"compression.technique": "channel_pruning", "compression.ratio": r, **FINE_TUNE}
       for r in (0.25, 0.5)},
    "int8": {"compression.technique": "int8", "compression.calibration_images": 512},
    "fp16": {"compression.technique": "fp16"},
}


def config(architecture: str, variant: dict) -> dict:
    return {"dataset.name": "digits", "dataset.image_size": 32, "dataset.val_fraction": 0.2,
            "dataset.split_seed": 0, "model.architecture": architecture, "model.epochs": 3,
            "model.learning_rate": 0.05, "model.batch_size": 64, "model.seed": 0, "model.weights": "",
            **variant, "algorithm.conv": "direct", "software.compiler": "tvm", "software.tuning": "untuned",
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
            "verification": attrs["verification"],
            "compression_record": {k: v for k, v in attrs["compression"].items() if k != "calibration"},
            "trial_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--compressions", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--max-samples", type=int, default=180, help="validation images for accuracy")
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
    path = out.save()
    print("\n| model | compression | accuracy | size (MB) | latency (ms) | vs none |\n|---|---|---|---|---|---|")
    measured = succeeded(rows)
    for label, row in rows.items():
        if label not in measured:
            print(f"| {label.replace(' ', ' | ', 1)} | failed: {row['failed']} | | | |")
            continue
        base = measured.get(f"{row['model']} none")
        speedup = f"{base['latency_ms'] / row['latency_ms']:.2f}x" if base else "-"
        print(f"| {row['model']} | {row['compression']} | {row['accuracy']:.3f} | {row['size_bytes'] / 1e6:.2f} | "
              f"{row['latency_ms']:.2f} | {speedup} |")
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
