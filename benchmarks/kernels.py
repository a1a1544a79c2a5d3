"""Where a TVM build's time goes: each kernel's time inside whole-model runs, for the TVM builds
of `benchmarks/systems.py` (untuned direct, gemm and the ``--algorithms`` asked for, in every
``--precisions``, and every tuned budget in its cache).

A Relax VM instrument times every call of the compiled model (fused kernels and VM builtins) while
the model runs end to end, so a kernel is timed with the caches the model leaves it — unlike
MetaSchedule's runner, which repeats one kernel alone. The builds are run in alternating rounds.
Reads the systems benchmark's artifact cache (a tuned budget must have been tuned there first);
builds from it what is missing, tuning nothing. A build that fails is recorded with its reason.

    python benchmarks/kernels.py [--model resnet18] [--algorithms nchwc] [--precisions float32 int8]
        [--runs 60] [--rounds 5] [--name kernels-resnet18]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections import defaultdict

import numpy as np
import tvm
from tvm import relax

from common import ROOT, ResultsFile, succeeded
from systems import CACHE, IMAGES, build, variants

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.stack.devices import create_device  # noqa: E402

BUILTIN = "vm.builtin"
LARGEST = 5
"""How many of a build's largest convolutions the summary line shows with their share of the peak."""


class KernelClock:
    """A VM instrument recording the seconds of every call, by the called function's name, and the
    multiply-accumulates of each convolution and matmul kernel (from its arguments' shapes)."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.macs: dict[str, int] = {}
        self.output_shapes: dict[str, list[int]] = {}
        self._started: dict[str, float] = {}

    def __call__(self, func, symbol: str, before_run: bool, ret_value, *args) -> int:
        name = BUILTIN if symbol.startswith(BUILTIN) else symbol
        if before_run:
            if name not in self.macs and ("conv2d" in name or "matmul" in name):
                self.macs[name] = multiply_accumulates(args[1].shape, args[-1].shape)
                self.output_shapes[name] = [int(extent) for extent in args[-1].shape]
            self._started[name] = time.perf_counter()
        else:
            self.seconds[name].append(time.perf_counter() - self._started[name])
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual


def output_channels(output_shape) -> int:
    """The output channels of a convolution's or matmul's output: axis 1 of NCHW, axes 1 and 4 of
    NCHW[x]c, the last axis of a (batch, features) matmul."""
    return int(np.prod([output_shape[axis] for axis in {2: (1,), 4: (1,), 5: (1, 4)}[len(output_shape)]]))


def multiply_accumulates(weight_shape, output_shape) -> int:
    """A convolution's or matmul's multiply-accumulates from its weight and output shapes, in any
    layout: every output element takes (weight elements / output channels) of them."""
    return int(np.prod(output_shape)) * int(np.prod(weight_shape)) // output_channels(output_shape)


def summary(clock: KernelClock, runs: int, peak_gflops: float | None) -> dict:
    """Per kernel: calls per inference, median ms per call and ms per inference (slowest first);
    for convolutions and matmuls also MACs, GFLOP/s and, given the float32 peak, its share."""
    kernels = {name: {"calls": len(seconds) / runs, "ms_per_call": 1e3 * float(np.median(seconds))}
               for name, seconds in clock.seconds.items()}
    for name, row in kernels.items():
        row["ms_per_inference"] = row["calls"] * row["ms_per_call"]
        if name in clock.macs:
            row["macs"], row["output_shape"] = clock.macs[name], clock.output_shapes[name]
            row["gflops"] = 2 * row["macs"] / row["ms_per_call"] / 1e6
            if peak_gflops:
                row["percent_of_peak"] = 100 * row["gflops"] / peak_gflops
    return dict(sorted(kernels.items(), key=lambda item: -item[1]["ms_per_inference"]))


def instrumented(machines: dict, name: str, model: str, algorithm: dict, software: dict, cache,
                 threads: int, precision: str) -> dict:
    """Build one variant (:func:`systems.build`) and keep its VM, with a :class:`KernelClock` as
    its instrument, in ``machines``."""
    executable, row = build(model, algorithm, software, cache, False, threads, precision)
    device = tvm.cpu()
    machine = relax.VirtualMachine(tvm.runtime.load_module(str(executable.library)), device)
    clock = KernelClock()
    machine.set_instrument(clock)
    machines[name] = (machine, clock, tvm.runtime.tensor(IMAGES[:1], device))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--algorithms", nargs="+", default=[], help="beside direct and gemm (e.g. nchwc)")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "int8"])
    parser.add_argument("--runs", type=int, default=60, help="whole-model runs per build per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--name", help="results file: benchmarks/results/NAME.json (default kernels-MODEL)")
    args = parser.parse_args()
    host = create_device({"device": "host-cpu", "threads": args.threads})
    host.configure_runtime()
    results: dict = {"model": args.model, "builds": {}}
    out = ResultsFile(args.name or f"kernels-{args.model}", results, args.threads)
    results["peak"] = peak = host.peak(ArtifactCache(CACHE / "untuned"))
    machines, float32 = {}, set()
    for name, (algorithm, software, cache, _, precision) in variants([], args.algorithms,
                                                                      tuple(args.precisions)).items():
        if software["compiler"] == "tvm":
            if precision == "float32":  # the peak is float32's: int8 dot products may exceed it
                float32.add(name)
            out.attempt(results["builds"], name, functools.partial(instrumented, machines, name, args.model, algorithm,
                                                                   software, cache, args.threads, precision))
    for _ in range(args.rounds):
        for machine, _, image in machines.values():
            for _ in range(args.runs):
                machine["main"](image)
    runs = args.rounds * args.runs
    results["runs"] = runs
    results["builds"].update({name: summary(clock, runs, peak["gflops"] if name in float32 else None)
                              for name, (_, clock, _) in machines.items()})
    builds = succeeded(results["builds"])
    kernels = sorted({kernel for rows in builds.values() for kernel in rows},
                     key=lambda kernel: -max(rows.get(kernel, {}).get("ms_per_inference", 0) for rows in builds.values()))
    print(f"{'kernel: ms per call (calls per inference)':<44}" + "".join(f"{name[4:]:>20}" for name in builds))
    for kernel in kernels:
        print(f"{kernel[:44]:<44}" + "".join(
            f"{rows[kernel]['ms_per_call']:14.3f} ({rows[kernel]['calls']:3.0f})" if kernel in rows else f"{'':>20}"
            for rows in builds.values()))
    print(f"{'per inference (ms)':<44}" + "".join(
        f"{sum(row['ms_per_inference'] for row in rows.values()):20.3f}" for rows in builds.values()))
    print(f"\nfloat32: the {LARGEST} convolutions with the most MACs (most output channels first), output "
          f"shape and share of the peak ({peak['gflops']:.1f} GFLOP/s, {peak['method']})")
    for name in float32 & set(builds):
        largest = sorted((row for row in builds[name].values() if "macs" in row),
                         key=lambda row: (-row["macs"], -output_channels(row["output_shape"])))
        print(f"{name[4:]:<28}" + "  ".join(f"{'x'.join(map(str, row['output_shape'][1:]))} {row['percent_of_peak']:.0f}%"
                                             for row in largest[:LARGEST]))
    print(f"saved {out.save().relative_to(ROOT)}")


if __name__ == "__main__":
    main()
