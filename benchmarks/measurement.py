"""Repeatability of the latency protocol on host-cpu: the old protocol and the new one side by side.

Three artifacts (untuned TVM, random weights, 32×32 CIFAR stems, batch 1): resnet18 direct,
resnet18 gemm, mobilenet_v2 direct. Each is measured ``--repeats`` times with each protocol,
alternating (artifact by artifact, old then new), in two conditions:

- ``as-is``: the machine as it is;
- ``load``: while this script runs its own bounded background load — one process busy on one core,
  switching on and off at random intervals (0.2-2 s each), stopped by the script.

Protocols: ``old`` is the trials' protocol before interference checks (one window of
``--min-time`` seconds after warm-up, median of its runs, no check); ``new`` is
`dlas_dse/stack/measurement.py` as trials use it (rounds, busy windows discarded and retimed,
every candidate statistic recorded). Reported per condition, artifact and protocol/statistic: the
median of the figures, their IQR / median, the re-measurement MAPE (mean |next - this| / this over
consecutive figures) and the seconds each measurement took; and which statistic is the most
repeatable (the one trials should use). An artifact that fails to build or to run is recorded with
its reason and the others go on.

    python benchmarks/measurement.py [--repeats 20] [--threads 2] [--min-time 1.0] [--conditions as-is load]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from common import ROOT, ResultsFile, random_model, succeeded

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.stack.compilers import BuildRequest, TVMExecutable, compile_model  # noqa: E402
from dlas_dse.stack.devices import create_device  # noqa: E402
from dlas_dse.stack.measurement import STATISTICS, local_counters, measure_latency  # noqa: E402

ARTIFACTS = {"resnet18 direct": ("resnet18", "direct"), "resnet18 gemm": ("resnet18", "gemm"),
             "mobilenet_v2 direct": ("mobilenet_v2", "direct")}
UNTUNED = {"compiler": "tvm", "tuning": "untuned", "trials_per_task": 16, "max_trials": 0, "tuning_timeout_s": 0.0}
LOAD_SCRIPT = """
import os, random, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
random.seed(int(sys.argv[2]))
while True:
    busy_until = time.monotonic() + random.uniform(0.2, 2.0)
    while time.monotonic() < busy_until:
        pass
    time.sleep(random.uniform(0.2, 2.0))
"""


def spread(values: list[float]) -> dict:
    """Median, IQR / median and re-measurement MAPE of successive figures ``values``."""
    figures = np.asarray(values)
    median = float(np.median(figures))
    q1, q3 = np.percentile(figures, [25, 75])
    mape = float(np.mean(np.abs(np.diff(figures)) / figures[:-1])) if len(figures) > 1 else 0.0
    return {"median_ms": median, "iqr_over_median": float((q3 - q1) / median), "remeasure_mape": mape,
            "figures_ms": [float(v) for v in figures]}


def build_artifact(host, architecture: str, conv: str) -> dict:
    """Compile (or reuse from the benchmark cache) one artifact: its shared library."""
    cache = ArtifactCache(ROOT / "results" / "benchmark-cache" / "measurement")
    request = BuildRequest(model=random_model(architecture),
                           model_key={"benchmark": "measurement", "architecture": architecture},
                           image_shape=(3, 32, 32), batch_size=1,
                           algorithm={"conv": conv, "layout": "NCHW", "format": "dense"}, software=UNTUNED, device=host)
    return {"library": str(cache.path("build", compile_model(request, cache).key) / "model.so")}


@contextlib.contextmanager
def background_load(enabled: bool) -> Iterator[None]:
    """One process busy on the last core, on and off at random intervals, while the block runs."""
    if not enabled:
        yield
        return
    core = max(os.sched_getaffinity(0))
    process = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, str(core), "0"])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def measure_artifact(name: str, library: str, host, protocols: dict, repeats: int) -> dict:
    """One artifact measured ``repeats`` times with each protocol, alternating: its row."""
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    executable = TVMExecutable(Path(library), host, 1, "float32")
    measured: dict[str, list] = {protocol: [] for protocol in protocols}
    for _ in range(repeats):
        for protocol, settings in protocols.items():
            measured[protocol].append(measure_latency(lambda n: executable.time_runs(image, n), **settings))
    old, new = measured["old"], measured["new"]
    row = {
        "old": {**spread([s.statistics["median"] for s in old]), "seconds": float(np.mean([s.seconds for s in old]))},
        "new": {statistic: spread([s.statistics[statistic] for s in new]) for statistic in STATISTICS},
        "new_seconds": float(np.mean([s.seconds for s in new])),
        "new_discarded_windows": int(sum(len(s.discarded) for s in new)),
        "new_noisy_measurements": int(sum(s.noisy for s in new)),
        "new_interference_kept": [max((i or 0.0) for i in s.interference) for s in new],
    }
    best = min(STATISTICS, key=lambda statistic: row["new"][statistic]["iqr_over_median"])
    print(f"  {name:<20} old {row['old']['median_ms']:7.2f} ms IQR/median {100 * row['old']['iqr_over_median']:5.1f}% "
          f"MAPE {100 * row['old']['remeasure_mape']:5.1f}% ({row['old']['seconds']:.1f} s) | new "
          + "  ".join(f"{statistic} {100 * row['new'][statistic]['iqr_over_median']:4.1f}%/"
                      f"{100 * row['new'][statistic]['remeasure_mape']:4.1f}%" for statistic in STATISTICS)
          + f" ({row['new_seconds']:.1f} s, {row['new_discarded_windows']} discarded, "
            f"{row['new_noisy_measurements']} noisy; most repeatable: {best})", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="measurements per artifact and protocol")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="runtime threads")
    parser.add_argument("--min-time", type=float, default=1.0, help="timed seconds per measurement")
    parser.add_argument("--conditions", nargs="+", default=["as-is", "load"], choices=["as-is", "load"])
    parser.add_argument("--name", default="measurement", help="results file name")
    args = parser.parse_args()
    host = create_device({"device": "host-cpu", "threads": args.threads})
    host.configure_runtime()
    common = {"warmup_runs": 2, "min_repeats": 5, "max_repeats": 2000, "min_time_s": args.min_time}
    protocols = {"old": {**common, "rounds": 1, "max_discarded": 0, "counters": None},
                 "new": {**common, "counters": local_counters()}}
    results: dict = {"protocols": {name: {k: v for k, v in settings.items() if k != "counters"}
                                   for name, settings in protocols.items()}, "artifacts": {}, "by_condition": {}}
    out = ResultsFile(args.name, results, args.threads)
    for name, (architecture, conv) in ARTIFACTS.items():
        out.attempt(results["artifacts"], name, functools.partial(build_artifact, host, architecture, conv))
    for condition in args.conditions:
        print(f"{condition} ({args.threads} threads):", flush=True)
        rows = results["by_condition"][condition] = {}
        with background_load(condition == "load"):
            for name, artifact in succeeded(results["artifacts"]).items():
                out.attempt(rows, name, functools.partial(measure_artifact, name, artifact["library"], host,
                                                          protocols, args.repeats))
    rank = {statistic: float(np.mean([row["new"][statistic]["iqr_over_median"] for rows in
                                      results["by_condition"].values() for row in succeeded(rows).values()]))
            for statistic in STATISTICS}
    results["mean_iqr_over_median_by_statistic"] = rank
    results["most_repeatable_statistic"] = min(rank, key=rank.get)
    print("mean IQR/median by statistic: " + ", ".join(f"{s} {100 * v:.1f}%" for s, v in rank.items())
          + f" -> {results['most_repeatable_statistic']}")
    print(f"saved {out.save().relative_to(ROOT)}")


if __name__ == "__main__":
    main()
