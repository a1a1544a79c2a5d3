"""The latency surrogate on a real exhaustive grid: held-out accuracy, and how fast each search
strategy finds the grid's Pareto front.

1. Runs (or reuses, with --project) an untuned sub-grid of dlas-paper-mini through the CLI:
   digits; three models; every compression, algorithm and weight format; 1 thread and all threads.
   16 random points are then measured a second time (builds cached): the repeatability of a
   measurement here, the floor any predictor is judged against.
2. `surrogate evaluate` on its trials: MAPE, share within ±10%/±20%, Kendall τ, R² for random
   k-fold and leave-one-model-out (held-out trials only), with the predicted-vs-measured plots.
3. Replays random, NSGA-II, TPE and the surrogate-assisted sampler over the grid's real
   measurements (nothing re-measured; several seeds each) and records the share of the grid's
   hypervolume of (accuracy, log latency, log size) reached after each measured trial.

    python benchmarks/surrogate.py [--models resnet18 mobilenet_v2 mnasnet1_0] [--budget 60] [--seeds 5]
        [--project DIR]   (a folder from an earlier run: its grid is reused, not re-run)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from common import RESULTS, ResultsFile, digits_space, grid_study, write_project  # noqa: E402

from dlas_dse.config import load_study  # noqa: E402
from dlas_dse.space import config_key  # noqa: E402
from dlas_dse.study.opening import StudyNotFound, load_stored_study  # noqa: E402
from dlas_dse.surrogate.data import measured_trials  # noqa: E402
from dlas_dse.surrogate.evaluation import evaluate  # noqa: E402
from dlas_dse.surrogate.replay import MeasuredGrid, replay, trials_to_reach  # noqa: E402
from dlas_dse.surrogate.sampler import SurrogateSampler  # noqa: E402

LAYERS = """\
compression:
  technique: {choices: [none, weight_pruning, channel_pruning, int8, fp16]}
  sparsity: 0.8
  ratio: 0.5
  finetune_epochs: 1
algorithm:
  conv: {choices: [direct, gemm, spatial_pack]}
  format: {choices: [dense, sparse]}
software:
  compiler: tvm
  tuning: untuned
hardware:
  device: host-cpu
  threads: {choices: [1, 0]}
"""
REPEATS = 16
GROUPS = ("model.architecture", "compression.technique", "algorithm.conv", "algorithm.format", "hardware.threads")
"""The layer parameters the held-out errors are grouped by."""
TARGET = 0.95


def run(project: Path, *args: str) -> None:
    """``python -m dlas_dse ARGS`` in ``project`` with its own artifact cache."""
    env = {**os.environ, "DLAS_CACHE_DIR": str(project / "cache")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlas_dse", *args, "--no-progress"], cwd=project, env=env, check=True)
    print(f"{' '.join(args)}: {time.perf_counter() - started:.0f} s", flush=True)


def repeatability(grid: optuna.Study, again: optuna.Study) -> dict:
    """How far a second measurement of the same point lands from the first (cached builds, new
    measurements): the noise floor any latency predictor is judged against."""
    first = measured_trials([grid])
    latency = {config_key(c): ms for c, ms in zip(first.configs, first.latencies_ms)}
    second = measured_trials([again])
    pairs = [(latency[config_key(c)], ms) for c, ms in zip(second.configs, second.latencies_ms)
             if config_key(c) in latency]
    relative = np.array([abs(b - a) / a for a, b in pairs])
    described = [", ".join(str(c[name]) for name in GROUPS) for c in second.configs if config_key(c) in latency]
    return {"points": len(pairs), "mape_percent": float(100 * relative.mean()),
            "within_10_percent": float((relative <= 0.10).mean()), "within_20_percent": float((relative <= 0.20).mean()),
            "pairs": [{"configuration": text, "first_ms": a, "second_ms": b} for text, (a, b) in zip(described, pairs)]}


def errors_by_group(measured, predictions: pd.DataFrame) -> dict:
    """The held-out relative errors of ``predictions`` grouped by each layer parameter of
    :data:`GROUPS`: where the surrogate misses."""
    configs = dict(zip(measured.origins, measured.configs))
    errors = pd.DataFrame([{name: configs[trial][name] for name in GROUPS} for trial in predictions["trial"]])
    errors["error"] = ((predictions["predicted_ms"] - predictions["measured_ms"]).abs()
                       / predictions["measured_ms"]).to_numpy()
    return {name: {str(value): {"trials": len(group), "mape_percent": float(100 * group["error"].mean()),
                                "within_10_percent": float((group["error"] <= 0.10).mean())}
                   for value, group in errors.groupby(name)}
            for name in GROUPS}


def samplers(space, cache_dir: str, seed: int) -> dict[str, optuna.samplers.BaseSampler]:
    return {"random": optuna.samplers.RandomSampler(seed=seed),
            "nsga2": optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
            "tpe": optuna.samplers.TPESampler(seed=seed),
            "surrogate": SurrogateSampler(space, cache_dir, seed, startup_trials=8)}


def plot_curves(curves: dict[str, list[list[float]]], path: Path, points: int) -> None:
    figure, ax = plt.subplots(figsize=(7, 4.5))
    for index, (name, runs) in enumerate(curves.items()):
        shares = np.array(runs)
        steps = np.arange(1, shares.shape[1] + 1)
        ax.plot(steps, np.median(shares, axis=0), color=f"C{index}", label=f"{name} (median)")
        ax.fill_between(steps, shares.min(axis=0), shares.max(axis=0), color=f"C{index}", alpha=0.15)
    ax.axhline(TARGET, color="black", linestyle="--", linewidth=1, label=f"{TARGET:.0%} of the grid's")
    ax.set(xlabel=f"measured trials (the grid has {points})", ylabel="share of the grid's hypervolume",
           title="Search on a measured grid: hypervolume of (accuracy, latency, size)", ylim=(0, 1.02))
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "mnasnet1_0"])
    parser.add_argument("--budget", type=int, default=60, help="measured trials per search run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--project", type=Path, help="reuse the grid of an earlier run in this folder")
    args = parser.parse_args()
    results: dict = {}
    out = ResultsFile("surrogate", results, 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    project = args.project or Path(tempfile.mkdtemp(prefix="dlas-surrogate-bench-"))
    write_project(project, {
        "search_spaces/surrogate-bench.yaml": digits_space("surrogate benchmark - an untuned sub-grid of "
                                                           "dlas-paper-mini", args.models, LAYERS),
        "studies/surrogate-bench.yaml": grid_study("surrogate benchmark grid", "surrogate-bench"),
        "studies/surrogate-repeat.yaml": grid_study("surrogate benchmark - points measured again", "surrogate-bench",
                                                    sampler="random")})
    print(f"project: {project}", flush=True)
    run(project, "grid", "--study", "surrogate-bench")
    os.chdir(project)
    os.environ["DLAS_CACHE_DIR"] = cache_dir = str(project / "cache")
    try:  # a reused project keeps the points it measured again
        repeated = len(measured_trials([load_stored_study("surrogate-repeat")]))
    except StudyNotFound:
        repeated = 0
    if repeated < REPEATS:
        run(project, "optimize", "--study", "surrogate-repeat", "--n-trials", str(REPEATS - repeated))
    config = load_study("surrogate-bench")
    study = load_stored_study("surrogate-bench")
    measured = measured_trials([study])
    noise = repeatability(study, load_stored_study("surrogate-repeat"))
    print(f"a second measurement of {noise['points']} points: {noise}", flush=True)
    figures = RESULTS / "surrogate"
    if figures.exists():
        shutil.rmtree(figures)
    table, skipped = evaluate(measured, cache_dir, figures)
    print(table.to_string(index=False), flush=True)
    by_group = errors_by_group(measured, pd.read_csv(figures / "predictions_k-fold.csv"))

    grid = MeasuredGrid(study)
    curves: dict[str, list[list[float]]] = {}
    for seed in range(args.seeds):
        for name, sampler in samplers(config.space, cache_dir, seed).items():
            curves.setdefault(name, []).append(replay(grid, config.space, sampler, args.budget))
            print(f"  seed {seed} {name}: {curves[name][-1][-1]:.3f} of the grid's hypervolume after "
                  f"{args.budget} trials", flush=True)
    plot_curves(curves, RESULTS / "surrogate_search.png", len(grid.values))
    reach = {name: [trials_to_reach(run, TARGET) for run in runs] for name, runs in curves.items()}
    results.update({"models": args.models, "points": len(grid.values), "trials": len(measured),
               "evaluation": table.to_dict(orient="records"), "k_fold_errors_by_group": by_group,
               "skipped": skipped, "repeatability": noise,
               "search": {"budget": args.budget, "seeds": args.seeds, "target_share": TARGET,
                          "trials_to_target": reach,
                          "median_share": {name: np.median(np.array(runs), axis=0).round(4).tolist()
                                           for name, runs in curves.items()}},
               "project": str(project)})
    for name, counts in reach.items():
        print(f"{name}: trials to {TARGET:.0%} of the grid's hypervolume per seed: {counts}")
    print(f"saved {out.save()}")


if __name__ == "__main__":
    main()
