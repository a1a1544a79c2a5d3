"""The CPU peak, old and new, beside the fastest real network here: is "% of peak" below 100 %?

- new: `dlas_dse/stack/peak.py`'s FMA microkernel (measured afresh, not read from a cache);
- old: the peak before it, NumPy's float32 GEMM at 1024-3072 (median of 7 products per size, best
  size), which OpenBLAS under the workplace's OPENBLAS_CORETYPE slows;
- ONNX Runtime's achieved GFLOP/s on resnet18 (32×32 CIFAR stem, random weights, float32, batch 1,
  the project's onnxruntime build): median of the round medians, and its best single run.

    python benchmarks/peak.py [--threads 2] [--rounds 5] [--min-time 0.5] [--name peak]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import threadpoolctl

from common import ROOT, ResultsFile, interleaved_ms, random_model

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.stack.compilers import BuildRequest, compile_model  # noqa: E402
from dlas_dse.stack.devices import create_device  # noqa: E402
from dlas_dse.stack.peak import measure_cpu_peak  # noqa: E402

CACHE = ROOT / "results" / "benchmark-cache" / "peak"
GEMM_SIZES = (1024, 2048, 3072)
IMAGE = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)


def numpy_gemm_gflops(threads: int, runs: int = 7) -> dict[str, float]:
    """The old peak's measurement: per size, the median GFLOP/s of ``runs`` float32 products."""
    rng, per_size = np.random.default_rng(0), {}
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        for size in GEMM_SIZES:
            a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
            a @ b  # warm-up
            seconds = []
            for _ in range(runs):
                started = time.perf_counter()
                a @ b
                seconds.append(time.perf_counter() - started)
            per_size[str(size)] = 2 * size ** 3 / float(np.median(seconds)) / 1e9
    return per_size


def onnxruntime_resnet18(device, rounds: int, min_time_s: float) -> dict:
    """ONNX Runtime on resnet18: MACs, median and best latency, and the GFLOP/s of each."""
    request = BuildRequest(model=random_model("resnet18"), model_key={"benchmark": "peak", "architecture": "resnet18"},
                           image_shape=(3, 32, 32), batch_size=1,
                           algorithm={"conv": "direct", "layout": "NCHW", "format": "dense"},
                           software={"compiler": "onnxruntime"}, device=device, tune=False)
    build = compile_model(request, ArtifactCache(CACHE))
    timing = interleaved_ms({"onnxruntime": lambda count: build.executable.time_runs(IMAGE, count)}, rounds,
                            min_time_s)["onnxruntime"]
    best_ms = 1e3 * min(build.executable.time_runs(IMAGE, 200))
    return {"macs": build.macs, **timing, "best_ms": best_ms,
            "gflops_median": 2 * build.macs / timing["latency_ms"] / 1e6,
            "gflops_best": 2 * build.macs / best_ms / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=5, help="rounds of ONNX Runtime's latency protocol")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed runs per round")
    parser.add_argument("--name", default="peak", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    device = create_device({"device": "host-cpu", "threads": args.threads})
    device.configure_runtime()
    results: dict = {}
    out = ResultsFile(args.name, results, args.threads)
    new = measure_cpu_peak(args.threads, device.target)
    old = numpy_gemm_gflops(args.threads)
    ort = onnxruntime_resnet18(device, args.rounds, args.min_time)
    results.update({"new_peak": new, "old_numpy_peak": {"gflops": max(old.values()), "gflops_per_size": old},
                    "onnxruntime_resnet18": ort})
    for name, peak in (("new", new["gflops"]), ("old", max(old.values()))):
        results[f"onnxruntime_percent_of_{name}_peak"] = {"median": 100 * ort["gflops_median"] / peak,
                                                           "best": 100 * ort["gflops_best"] / peak}
        print(f"{name} peak {peak:6.1f} GFLOP/s: ONNX Runtime resnet18 at "
              f"{results[f'onnxruntime_percent_of_{name}_peak']['median']:.1f}% (median), "
              f"{results[f'onnxruntime_percent_of_{name}_peak']['best']:.1f}% (best run)")
    print(f"ONNX Runtime resnet18: {ort['latency_ms']:.2f} ms median ({ort['gflops_median']:.1f} GFLOP/s), "
          f"{ort['best_ms']:.2f} ms best ({ort['gflops_best']:.1f} GFLOP/s); new peak: {new['method']}")
    print(f"saved {out.save().relative_to(ROOT)}")


if __name__ == "__main__":
    main()
