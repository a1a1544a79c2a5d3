"""Accuracy, deployed size and untuned TVM latency of every compression technique, side by side,
and the co-design headline: the fastest configuration within one accuracy point of the
uncompressed model, against ONNX Runtime on the uncompressed model.

For resnet18 and mobilenet_v2 on digits (32x32): none, weight_pruning {0.5, 0.8, 0.9, 0.95}
(dense, and at 0.9 also in the sparse CSR format), channel_pruning {0.25, 0.5}, int8 and fp16,
each with every convolution algorithm asked for (``--algorithms``; the sparse format is its own
algorithm, so only with ``direct``), and ONNX Runtime on the uncompressed model (float32): each a
whole trial in its own process (train once, compress + fine-tune, compile, verify against
PyTorch, measure, accuracy from the compiled artifact). A configuration that fails is recorded
with its reason and the others go on. Then every model's built artifacts are timed again side by
side, in alternating rounds in one process (so that a drift of the machine hits all alike): the
speed-ups are ratios of those figures, with the spread of the per-round ratios.

    python benchmarks/compression.py [--models resnet18 mobilenet_v2] [--compressions none int8]
        [--algorithms direct nchwc] [--max-samples 180] [--rounds 5] [--name compression] [--resume]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np
from common import ROOT, ResultsFile, interleaved_ms, succeeded

from dlas_dse.config import settings_with_defaults  # noqa: E402
from dlas_dse.registry import ALGORITHMS  # noqa: E402
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


PEER = "onnxruntime"
"""The compiler the headline compares against, on the uncompressed model."""


def config(architecture: str, variant: dict, algorithm: str = "direct", compiler: str = "tvm") -> dict:
    return {"dataset.name": "digits", "dataset.image_size": 32, "dataset.val_fraction": 0.2,
            "dataset.split_seed": 0, "model.architecture": architecture, "model.epochs": 3,
            "model.learning_rate": 0.05, "model.batch_size": 64, "model.seed": 0, "model.weights": "",
            "algorithm.conv": algorithm, **variant, "software.compiler": compiler, "software.tuning": "untuned",
            "hardware.device": "host-cpu", "hardware.threads": os.cpu_count()}


def configurations(compressions: list[str], algorithms: list[str]) -> dict[str, tuple[str, str, str]]:
    """Row name → (compression, algorithm, compiler): every compression with every algorithm (the
    sparse format only with ``direct``: it is its own algorithm), then the peer on ``none``."""
    rows = {f"{name}{'' if algorithm == 'direct' else f' / {algorithm}'}": (name, algorithm, "tvm")
            for name in compressions for algorithm in algorithms
            if algorithm == "direct" or VARIANTS[name].get("algorithm.format") != "sparse"}
    return {**rows, f"none / {PEER}": ("none", "direct", PEER)}


def run(architecture: str, name: str, compression: str, algorithm: str, compiler: str,
        settings: dict, cache: str) -> dict:
    """One configuration as a trial in a child process: its row."""
    started = time.perf_counter()
    result = run_trial(config(architecture, VARIANTS[compression], algorithm, compiler), settings, cache,
                       TRIAL_TIMEOUT_S)
    attrs, values = result.attributes, result.values
    print(f"{architecture:<13} {name:<32} accuracy {values['accuracy']:.3f}  "
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
    for key, reference in (("speedup", f"{architecture} none"), ("vs_peer", f"{architecture} none / {PEER}")):
        if reference not in timed:
            continue
        for figures in timed.values():
            ratios = [b / r for b, r in zip(timed[reference]["rounds_ms"], figures["rounds_ms"])]
            figures[key], figures[f"{key}_range"] = float(np.median(ratios)), [min(ratios), max(ratios)]
    return timed


def headline(rows: dict, architecture: str) -> dict | None:
    """The fastest of the model's re-timed TVM configurations whose accuracy is within one point of
    the uncompressed model's, with its speed-up over the peer on the uncompressed model."""
    timed = {label: row for label, row in succeeded(rows).items()
             if row["model"] == architecture and "vs_peer" in row.get("side_by_side", {})}
    base = timed.get(f"{architecture} none")
    if base is None:
        return None
    eligible = {label: row for label, row in timed.items()
                if not label.endswith(PEER) and row["accuracy"] >= base["accuracy"] - 0.01}
    label = max(eligible, key=lambda name: eligible[name]["side_by_side"]["vs_peer"])
    figures = eligible[label]["side_by_side"]
    return {"configuration": label, "accuracy": eligible[label]["accuracy"], "uncompressed_accuracy": base["accuracy"],
            "vs_peer": figures["vs_peer"], "vs_peer_range": figures["vs_peer_range"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--compressions", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--algorithms", nargs="+", default=["direct", "nchwc"], choices=ALGORITHMS.names(),
                        help="convolution algorithms each compression is built with (algorithm.conv)")
    parser.add_argument("--max-samples", type=int, default=180, help="validation images for accuracy")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the side-by-side timing")
    parser.add_argument("--resume", action="store_true", help="keep the configurations an earlier run of the same "
                        "--name measured (delete a row from its JSON to measure it again); re-time all side by side")
    parser.add_argument("--cache", default=str(ROOT / "results" / "cache"))
    parser.add_argument("--name", default="compression", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    settings = settings_with_defaults({
        "evaluation": {"batch_size": 16, "max_samples": args.max_samples},
        "measurement": {"warmup_runs": 2, "min_repeats": 5, "max_repeats": 200, "min_time_s": 1.0},
        "verification": {"samples": 4, "tolerance": 1e-3}})
    rows: dict = {}
    headlines: dict = {}
    out = ResultsFile(args.name, {"rows": rows, "headline": headlines, "accuracy_samples": args.max_samples},
                      os.cpu_count())
    earlier = out.earlier_rows("rows") if args.resume else {}
    for architecture in args.models:
        for name, (compression, algorithm, compiler) in configurations(args.compressions, args.algorithms).items():
            label = f"{architecture} {name}"
            if label in earlier:
                rows[label] = earlier[label]
                continue
            out.attempt(rows, label, functools.partial(
                run, architecture, name, compression, algorithm, compiler, settings, args.cache))
    for architecture in args.models:
        for label, figures in side_by_side(rows, architecture, args.cache, args.rounds).items():
            rows[label]["side_by_side"] = figures
        headlines[architecture] = headline(rows, architecture)
    path = out.save()
    print(f"\n| model | configuration | accuracy | size (MB) | latency in the trial (ms) | side by side (ms) | "
          f"vs none | vs {PEER} none (ranges over {args.rounds} rounds) |\n|---|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        if "side_by_side" not in row:
            print(f"| {label.replace(' ', ' | ', 1)} | failed: {row.get('failed', 'not re-timed')} | | | | | |")
            continue
        figures = row["side_by_side"]
        print(f"| {row['model']} | {row['compression']} | {row['accuracy']:.3f} | {row['size_bytes'] / 1e6:.2f} | "
              f"{row['latency_ms']:.2f} | {figures['latency_ms']:.2f} | {ratio(figures, 'speedup')} | "
              f"{ratio(figures, 'vs_peer')} |")
    for architecture, best in headlines.items():
        if best:
            print(f"{architecture}: fastest within 1 accuracy point ({best['uncompressed_accuracy']:.3f}): "
                  f"{best['configuration']} ({best['accuracy']:.3f}), {best['vs_peer']:.2f}x {PEER} on none "
                  f"(rounds {best['vs_peer_range'][0]:.2f}-{best['vs_peer_range'][1]:.2f})")
    print(f"saved {path.relative_to(ROOT)}")


def ratio(figures: dict, key: str) -> str:
    """A median ratio with its range over the rounds, or '-' where its reference was not timed."""
    if key not in figures:
        return "-"
    low, high = figures[f"{key}_range"]
    return f"{figures[key]:.2f}x ({low:.2f}-{high:.2f})"


if __name__ == "__main__":
    main()
