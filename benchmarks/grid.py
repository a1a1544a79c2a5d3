"""Grid mode on this machine: what reuse across the grid saves, and what a second worker adds.

A sub-grid of `dlas-paper-mini` (digits, two models, compressions x conv algorithms x tunings x
{1 thread, all threads}; tuning budget 2 trials per task) runs four times, each from an empty
artifact cache, through the real CLI:

- reuse:     one trial per `optimize --sampler grid --n-trials k` call, the cache kept;
- no reuse:  the same calls, the cache emptied before each one (only the measured CPU peak is
             kept), so every trial trains, compresses, tunes and builds from scratch;
- 1 worker / 2 workers: `worker` processes on a fresh PostgreSQL database, run to completion.

The first two use the same per-trial calls, so their ratio is what caching saves, not process
start-up. Stage counts come from each trial's `cache_hits` (misses = stages executed) and are
compared with `grid --dry-run`'s plan. A run that fails is recorded with its reason and the others go on.

    python benchmarks/grid.py [--models resnet18 mobilenet_v2] [--compressions none int8]
        [--convs direct gemm] [--tunings untuned metaschedule] [--phases reuse workers]
        [--postgres postgresql://...] [--name grid]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import sqlalchemy

from common import ResultsFile, digits_space, grid_study, write_project

from dlas_dse.config import load_study  # noqa: E402
from dlas_dse.grid import plan_grid  # noqa: E402

LAYERS = """\
compression:
  technique: {{choices: {compressions}}}  # each technique's own parameters at their defaults
algorithm:
  conv: {{choices: {convs}}}
software:
  compiler: tvm
  tuning: {{choices: {tunings}}}
{tuning_budget}hardware:
  device: host-cpu
  threads: {{choices: [1, 0]}}
"""
TUNING_BUDGET = "  trials_per_task: 2\n"
STAGES = ("train", "compress", "build", "eval_build", "accuracy")


def _command(project: Path, cache: Path, *args: str) -> None:
    env = {**os.environ, "DLAS_CACHE_DIR": str(cache)}
    subprocess.run([sys.executable, "-m", "dlas_dse", *args], cwd=project, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="bench", storage=storage)
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def _summary(trials: list, seconds: float) -> dict:
    """Wall time, stages actually executed (cache misses) and the median latency per point."""
    executed = {stage: sum(not t.user_attrs["cache_hits"][stage] for t in trials) for stage in STAGES}
    executed["tuning"] = sum(1 for t in trials if not t.user_attrs["cache_hits"]["build"]
                             and t.user_attrs["build"].get("tuning", {}).get("tuned_tasks"))
    return {"seconds": seconds, "points": len(trials), "stages_executed": executed,
            "latency_ms": {str(sorted(t.params.items())): t.values[1] for t in trials}}


def one_trial_at_a_time(project: Path, points: int, keep_cache: bool) -> dict:
    """Run the grid one trial per CLI call; empty the cache (but the peak) before each unless kept."""
    cache, storage = project / f"cache-{keep_cache}", f"sqlite:///{project}/reuse-{keep_cache}.db"
    started = time.perf_counter()
    for count in range(1, points + 1):
        if not keep_cache and cache.exists():
            for stage in cache.iterdir():
                if stage.name != "peak":
                    shutil.rmtree(stage)
        _command(project, cache, "optimize", "--study", "bench", "--sampler", "grid", "--n-trials", str(count),
                 "--storage", storage, "--no-progress")
        print(f"  {'reuse' if keep_cache else 'no reuse'}: {count}/{points} points, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return _summary(_trials(storage), time.perf_counter() - started)


def workers(project: Path, count: int, server: str, peak_from: Path) -> dict:
    """``count`` worker processes on a fresh PostgreSQL database and a fresh cache."""
    name = f"dlas_bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    url = server.rsplit("/", 1)[0] + f"/{name}"
    cache = project / f"cache-workers-{count}"
    if (peak_from / "peak").exists():  # the CPU's measured peak, not part of what is compared
        shutil.copytree(peak_from / "peak", cache / "peak")
    env = {**os.environ, "DLAS_CACHE_DIR": str(cache)}
    try:
        started = time.perf_counter()
        processes = [subprocess.Popen([sys.executable, "-m", "dlas_dse", "worker", "--study", "bench", "--storage",
                                       url, "--no-progress"], cwd=project, env=env, stdout=subprocess.DEVNULL)
                     for _ in range(count)]
        if any(process.wait() for process in processes):
            raise RuntimeError(f"a worker failed ({count} workers)")
        seconds = time.perf_counter() - started
        print(f"  {count} worker(s): {seconds:.0f} s", flush=True)
        return _summary(_trials(url), seconds)
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
        engine.dispose()


def reuse_phases(project: Path, points: int, out: ResultsFile) -> None:
    """The grid with the cache kept and with it emptied before every point, one CLI call per point."""
    results = out.results
    for mode, keep_cache in (("reuse", True), ("no_reuse", False)):
        out.attempt(results, mode, functools.partial(one_trial_at_a_time, project, points, keep_cache))
    if not any("failed" in results[mode] for mode in ("reuse", "no_reuse")):
        results["reuse_speedup"] = results["no_reuse"]["seconds"] / results["reuse"]["seconds"]
        print(f"reuse: {results['reuse']['seconds']:.0f} s, no reuse: {results['no_reuse']['seconds']:.0f} s "
              f"(x{results['reuse_speedup']:.2f})")


def worker_phases(project: Path, server: str, out: ResultsFile) -> None:
    """The grid run by 1, then 2 worker processes on PostgreSQL, each from a fresh cache."""
    results = out.results
    for count in (1, 2):
        out.attempt(results, f"workers_{count}",
                    functools.partial(workers, project, count, server, project / "cache-True"))
    if any("failed" in results[key] for key in ("workers_1", "workers_2")):
        return
    results["second_worker_speedup"] = results["workers_1"]["seconds"] / results["workers_2"]["seconds"]
    one, two = results["workers_1"]["latency_ms"], results["workers_2"]["latency_ms"]
    results["two_worker_latency_ratio_median"] = sorted(two[k] / one[k] for k in one if k in two)[len(one) // 2]
    print(f"1 worker {results['workers_1']['seconds']:.0f} s, 2 workers {results['workers_2']['seconds']:.0f} s "
          f"(x{results['second_worker_speedup']:.2f}); latency measured beside a second worker / alone: "
          f"x{results['two_worker_latency_ratio_median']:.2f} (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--compressions", nargs="+", default=["none", "int8"])
    parser.add_argument("--convs", nargs="+", default=["direct", "gemm"])
    parser.add_argument("--tunings", nargs="+", default=["untuned", "metaschedule"])
    parser.add_argument("--phases", nargs="+", choices=("reuse", "workers"), default=["reuse", "workers"],
                        help="reuse: with and without the cache; workers: 1 and 2 worker processes")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL server for the worker runs")
    parser.add_argument("--name", default="grid", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="grid-benchmark-"))
    layers = LAYERS.format(compressions=args.compressions, convs=args.convs, tunings=args.tunings,
                           tuning_budget=TUNING_BUDGET if "metaschedule" in args.tunings else "")
    write_project(project, {"search_spaces/bench.yaml": digits_space("grid benchmark - a sub-grid of dlas-paper-mini",
                                                                     args.models, layers),
                            "studies/bench.yaml": grid_study("grid benchmark", "bench")})
    os.chdir(project)
    plan = plan_grid(load_study("bench").space)
    points = len(plan.points)
    print(f"{points} points; planned stages {plan.stages}", flush=True)
    out = ResultsFile(args.name, {"grid": vars(args), "points": points, "planned_stages": plan.stages},
                      threads=os.cpu_count())
    if "reuse" in args.phases:
        reuse_phases(project, points, out)
    if "workers" in args.phases:
        worker_phases(project, args.postgres, out)
    for mode in ("reuse", "no_reuse", "workers_1", "workers_2"):
        if mode in out.results and "failed" not in out.results[mode]:
            print(f"  stages executed ({mode}): {out.results[mode]['stages_executed']}")
    print(f"saved {out.save()}")
    shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
