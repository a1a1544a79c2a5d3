"""What a whole grid costs, estimated from per-stage times measured here.

Runs a seeded sample of a grid study's points (half untuned, half tuned) as trials, one after the
other, from an empty artifact cache and tuning database, so that every stage that runs is timed
where it runs and nothing is reused that the sample did not build itself. Each shared stage's
mean time per execution (training, compression, build with its evaluation build and accuracy
run, tuning run, and the per-point measurement: verification, latency, process start) times the
number of executions `grid --dry-run` plans gives the grid's cost on one machine; N machines that
share the study storage and the artifact cache divide it by N at best (one worker per machine:
a second worker on a 2-core machine is slower, see `benchmarks/grid.py`).

Tuning in a sample from an empty database tunes more workloads per run than the full grid does
(whose runs share a database per target and thread count), so the tuning figure is an upper bound
of the mean. `--estimate` names other studies to price with the same per-stage means (their
trainings scaled by training images × epochs where the dataset is known, every other stage at the
sampled models' and image size's cost: for a grid of larger models and images, a lower bound).

    python benchmarks/grid_cost.py [--study dlas-paper-mini] [--points 12] [--seed 0]
        [--estimate dlas-paper] [--machines 1 4 16] [--name grid-cost]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import numpy as np
from common import ResultsFile

from dlas_dse.config import load_study  # noqa: E402
from dlas_dse.grid import plan_grid  # noqa: E402
from dlas_dse.space import nest  # noqa: E402
from dlas_dse.stack.datasets import load_dataset  # noqa: E402
from dlas_dse.trial import STAGES, run_trial  # noqa: E402

TRAINING_IMAGES = {"cifar10": 50_000}
"""Training images of datasets absent here, to scale their trainings (digits is measured)."""
PER_POINT = ("dataset", "verify", "measure")
"""The stages every point runs whatever the cache holds (with the trial process's start)."""


def sample(points: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` points of ``points``, half of them tuned, drawn with ``seed``."""
    rng = random.Random(seed)
    tuned = [p for p in points if p.get("software.tuning", "untuned") != "untuned"]
    untuned = [p for p in points if p.get("software.tuning", "untuned") == "untuned"]
    half = min(count // 2, len(tuned)) if untuned else min(count, len(tuned))
    return rng.sample(tuned, half) + rng.sample(untuned, min(count - half, len(untuned)))


def stage_seconds(attributes: dict, wall_s: float) -> dict[str, float]:
    """One trial's seconds per planned stage, counting only the stages it executed (cache misses)."""
    hits, config = attributes["cache_hits"], attributes["config"]
    tune_s = attributes.get("time_tune_s", 0.0)
    seconds = {"measurements": sum(attributes.get(f"time_{stage}_s", 0.0) for stage in PER_POINT)
               + wall_s - sum(attributes.get(f"time_{stage}_s", 0.0) for stage in STAGES)}
    if not hits["train"]:
        seconds["trainings"] = attributes["time_train_s"]
    if not hits["compress"] and config.get("compression.technique") != "none":
        seconds["compressions"] = attributes["time_compress_s"]
    if not hits["build"]:
        seconds["builds"] = attributes["time_compile_s"] - tune_s + (0.0 if hits["accuracy"] else attributes["time_accuracy_s"])
        if tune_s > 0:
            seconds["tuning runs"] = tune_s
    return seconds


def training_scale(point: dict, sampled: dict) -> float:
    """How many times the sampled trainings' images × epochs the training of ``point`` processes."""
    images = TRAINING_IMAGES.get(point["dataset.name"])
    if images is None or point["dataset.name"] == sampled["dataset"]:
        return float(point["model.epochs"]) / sampled["epochs"] if sampled["epochs"] else 1.0
    return images * point["model.epochs"] / (sampled["images"] * sampled["epochs"])


def estimate(study: str, means: dict[str, float], sampled: dict, machines: list[int]) -> dict:
    """The cost of ``study``'s grid from the per-stage ``means``: stage counts, seconds, hours."""
    plan = plan_grid(load_study(study).space)
    trainings = {(p["dataset.name"], p["model.architecture"], p["model.epochs"]): p for p in plan.points}
    seconds = {stage: count * means.get(stage, 0.0) for stage, count in plan.stages.items() if stage != "trainings"}
    seconds["trainings"] = sum(means.get("trainings", 0.0) * training_scale(p, sampled) for p in trainings.values())
    total = sum(seconds.values())
    return {"points": len(plan.points), "stages": plan.stages, "per_platform": plan.per_platform,
            "seconds": seconds, "hours_one_machine": total / 3600,
            "hours_on": {str(n): total / 3600 / n for n in machines}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="dlas-paper-mini", help="the grid study to sample and price")
    parser.add_argument("--points", type=int, default=12, help="points to run (half tuned)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimate", nargs="*", default=["dlas-paper"], help="other studies to price")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--name", default="grid-cost", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    config = load_study(args.study)
    chosen = sample(plan_grid(config.space).points, args.points, args.seed)
    rows: dict = {}
    out = ResultsFile(args.name, {"study": args.study, "rows": rows, "seed": args.seed}, os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="grid-cost-") as cache:
        for index, point in enumerate(chosen):
            def run(point: dict = point) -> dict:
                started = time.perf_counter()
                result = run_trial(point, config.settings, cache, config.trial_timeout_s)
                wall = time.perf_counter() - started
                return {"config": point, "wall_s": wall, "stages": stage_seconds(result.attributes, wall)}
            row = out.attempt(rows, f"point {index}", run)
            if "stages" in row:
                print(f"point {index + 1}/{len(chosen)}: {row['wall_s']:6.1f} s  " + "  ".join(
                    f"{stage} {s:.1f}" for stage, s in row["stages"].items()), flush=True)
    done = [row for row in rows.values() if "stages" in row]
    if not done:
        raise SystemExit("no sampled point finished: nothing to estimate from (see the failures above)")
    per_stage: dict[str, list[float]] = {}
    for row in done:
        for stage, seconds in row["stages"].items():
            per_stage.setdefault(stage, []).append(seconds)
    means = {stage: float(np.mean(values)) for stage, values in per_stage.items()}
    first = done[0]["config"]
    sampled = {"dataset": first["dataset.name"], "epochs": first["model.epochs"],
               "images": len(load_dataset(nest(first)["dataset"]).train_x)}
    out.results.update({"per_stage": {stage: {"mean_s": means[stage], "executions": len(per_stage[stage]),
                                              "min_s": min(per_stage[stage]), "max_s": max(per_stage[stage])}
                                      for stage in per_stage},
                        "failed": len(rows) - len(done),
                        "estimates": {study: estimate(study, means, sampled, args.machines)
                                      for study in [args.study, *args.estimate]}})
    path = out.save()
    print("\n| stage | executions sampled | mean (s) | range (s) |\n|---|---|---|---|")
    for stage, figures in out.results["per_stage"].items():
        print(f"| {stage} | {figures['executions']} | {figures['mean_s']:.1f} | "
              f"{figures['min_s']:.1f}-{figures['max_s']:.1f} |")
    for study, figures in out.results["estimates"].items():
        print(f"\n{study}: {figures['points']} points, {figures['hours_one_machine']:.1f} h on one machine; "
              + ", ".join(f"{h:.1f} h on {n}" for n, h in figures["hours_on"].items()))
        for stage, seconds in figures["seconds"].items():
            print(f"  {stage:<13} {figures['stages'][stage]:>6} x -> {seconds / 3600:7.2f} h")
    print(f"saved {path.name}")


if __name__ == "__main__":
    main()
