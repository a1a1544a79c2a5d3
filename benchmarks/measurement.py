"""Repeatability of the measurement protocol on host-cpu, local vs through RPC on loopback.

Three artifacts (untuned TVM, random weights, 32×32 CIFAR stems, batch 1): resnet18 direct,
resnet18 gemm, mobilenet_v2 direct. Each is measured 10 times with the trials' protocol
(`dlas_dse/stack/measurement.py`: warm-up, repeats until a minimum time, median) in this process
and 10 times on a board reached through a real TVM RPC tracker on 127.0.0.1 (this host as the
board), alternating local and remote, at each thread count in turn (largest first). Reported per thread count,
artifact and path: the median of the 10 medians, their spread (IQR / median, and (max - min) /
median) and the mean within-measurement IQR / median; and the remote/local ratio of the medians.

    python benchmarks/measurement.py [--repeats 10] [--threads 1 2] [--min-time 1.0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, random_model, save

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.stack.compiler import BuildRequest, TVMExecutable, compile_model  # noqa: E402
from dlas_dse.stack.hardware import RemoteBoard, create_device  # noqa: E402
from dlas_dse.stack.measurement import measure_latency  # noqa: E402
from dlas_dse.stack.remote import loopback_tracker  # noqa: E402

ARTIFACTS = {"resnet18 direct": ("resnet18", "direct"), "resnet18 gemm": ("resnet18", "gemm"),
             "mobilenet_v2 direct": ("mobilenet_v2", "direct")}
UNTUNED = {"compiler": "tvm", "tuning": "untuned", "trials_per_task": 16, "max_trials": 0, "tuning_timeout_s": 0.0}
KEY = "dlas-measurement-benchmark"


def spread(values: list[float]) -> dict:
    """Median, IQR / median and (max - min) / median of ``values``."""
    median = float(np.median(values))
    q1, q3 = np.percentile(values, [25, 75])
    return {"median_ms": median, "iqr_over_median": float((q3 - q1) / median),
            "range_over_median": float((max(values) - min(values)) / median)}


def build_artifacts(host) -> dict[str, Path]:
    """Compile (or reuse from the benchmark cache) each artifact; its shared library by name."""
    cache = ArtifactCache(ROOT / "results" / "benchmark-cache" / "measurement")
    libraries = {}
    for name, (architecture, conv) in ARTIFACTS.items():
        request = BuildRequest(random_model(architecture), {"benchmark": "measurement", "architecture": architecture},
                               (3, 32, 32), 1, {"conv": conv, "layout": "NCHW", "format": "dense"}, UNTUNED, host)
        libraries[name] = cache.path("build", compile_model(request, cache)[1]["build_key"]) / "model.so"
    return libraries


def measure_paths(libraries: dict[str, Path], threads: int, port: int, protocol: dict, repeats: int) -> dict:
    """Measure every artifact ``repeats`` times locally and through RPC at ``threads`` threads."""
    host = create_device({"device": "host-cpu", "threads": threads})
    host.configure_runtime()
    board = RemoteBoard("loopback", host.target, threads, "this host through RPC", host.cores,
                        {"kind": "rpc", "tracker": f"127.0.0.1:{port}", "key": KEY})
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    results = {}
    for name, library in libraries.items():
        executables = {"local": TVMExecutable(library, host, 1, "float32"),
                       "rpc": TVMExecutable(library, board, 1, "float32")}
        runs: dict = {path: [] for path in executables}
        for _ in range(repeats):
            for path, executable in executables.items():  # alternate: drift hits both paths alike
                runs[path].append(measure_latency(lambda n: executable.time_runs(image, n), **protocol))
        row = results[name] = {}
        for path, stats in runs.items():
            row[path] = {**spread([s.median_ms for s in stats]), "medians_ms": [s.median_ms for s in stats],
                         "within_iqr_over_median": float(np.mean([s.iqr_ms / s.median_ms for s in stats])),
                         "runs_per_measurement": float(np.mean([s.runs for s in stats]))}
        row["rpc_over_local"] = row["rpc"]["median_ms"] / row["local"]["median_ms"]
        print(f"{threads} thread(s)  {name:<20} " + "  ".join(
            f"{path} {row[path]['median_ms']:7.2f} ms (IQR/median {100 * row[path]['iqr_over_median']:4.1f}%, "
            f"range/median {100 * row[path]['range_over_median']:4.1f}%)" for path in runs)
            + f"  rpc/local {row['rpc_over_local']:.3f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="measurements per artifact and path")
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count()}),
                        help="thread counts, measured one after the other")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per measurement")
    args = parser.parse_args()
    started = time.perf_counter()
    libraries = build_artifacts(create_device({"device": "host-cpu", "threads": max(args.threads)}))
    protocol = {"warmup_runs": 2, "min_repeats": 5, "max_repeats": 2000, "min_time_s": args.min_time}
    results: dict = {"protocol": protocol, "by_threads": {}}
    with tempfile.TemporaryDirectory() as folder, loopback_tracker(KEY, Path(folder) / "server.log") as port:
        for threads in sorted(set(args.threads), reverse=True):  # TVM sizes its pool at first use: largest first
            results["by_threads"][str(threads)] = measure_paths(libraries, threads, port, protocol, args.repeats)
    out = save("measurement", results, max(args.threads), started)
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
