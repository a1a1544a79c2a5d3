"""Accuracy, deployed size and untuned TVM latency of every compression technique, side by side.

For resnet18 and mobilenet_v2 on digits (32x32): none, weight_pruning {0.5, 0.8, 0.95},
channel_pruning {0.25, 0.5}, int8 and fp16, each through the whole trial (train once, compress +
fine-tune, compile, verify against PyTorch, measure, accuracy from the compiled artifact).

    python benchmarks/compression.py [--models resnet18 mobilenet_v2] [--max-samples 180]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlas_dse.config import settings_with_defaults  # noqa: E402
from dlas_dse.stack.hardware import cpu_model  # noqa: E402
from dlas_dse.trial import execute  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--max-samples", type=int, default=180, help="validation images for accuracy")
    parser.add_argument("--cache", default=str(ROOT / "results" / "cache"))
    args = parser.parse_args()
    settings = settings_with_defaults({
        "evaluation": {"batch_size": 16, "max_samples": args.max_samples},
        "measurement": {"warmup_runs": 2, "min_repeats": 5, "max_repeats": 200, "min_time_s": 1.0},
        "verification": {"samples": 4, "tolerance": 1e-3}})
    rows = []
    for architecture in args.models:
        for name, variant in VARIANTS.items():
            started = time.perf_counter()
            result = execute(config(architecture, variant), settings, args.cache)
            attrs, values = result["attributes"], result["values"]
            row = {"model": architecture, "compression": name, **values,
                   "latency_iqr_ms": attrs["latency"]["iqr_ms"], "runs": attrs["latency"]["runs"],
                   "max_abs_error": attrs["verification"]["max_abs_error"],
                   "allowed_error": attrs["verification"]["allowed_error"],
                   "compression_record": {k: v for k, v in attrs["compression"].items() if k != "calibration"},
                   "trial_seconds": time.perf_counter() - started}
            rows.append(row)
            print(f"{architecture:<13} {name:<20} accuracy {values['accuracy']:.3f}  "
                  f"size {values['size_bytes'] / 1e6:7.2f} MB  latency {values['latency_ms']:8.2f} ms", flush=True)
    out = ROOT / "benchmarks" / "results" / "compression.json"
    out.write_text(json.dumps({"rows": rows, "cpu": cpu_model(), "cores": os.cpu_count(),
                               "accuracy_samples": args.max_samples, "date": time.strftime("%Y-%m-%d %H:%M")},
                              indent=1))
    print("\n| model | compression | accuracy | size (MB) | latency (ms) | vs none |\n|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["compression"] == "none")
        print(f"| {row['model']} | {row['compression']} | {row['accuracy']:.3f} | {row['size_bytes'] / 1e6:.2f} | "
              f"{row['latency_ms']:.2f} | {base['latency_ms'] / row['latency_ms']:.2f}x |")
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
