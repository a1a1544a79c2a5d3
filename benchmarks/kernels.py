"""Where a TVM build's time goes: each kernel's time inside whole-model runs, for the TVM builds
of `benchmarks/systems.py` (untuned direct and gemm, and every tuned budget in its cache).

A Relax VM instrument times every call of the compiled model (fused kernels and VM builtins) while
the model runs end to end, so a kernel is timed with the caches the model leaves it — unlike
MetaSchedule's runner, which repeats one kernel alone. The builds are run in alternating rounds.
Reads the systems benchmark's artifact cache (a tuned budget must have been tuned there first);
builds from it what is missing, tuning nothing. A build that fails is recorded with its reason.

    python benchmarks/kernels.py [--model resnet18] [--runs 60] [--rounds 5] [--name kernels-resnet18]
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
from systems import IMAGES, build, variants

from dlas_dse.stack.devices import create_device  # noqa: E402

BUILTIN = "vm.builtin"


class KernelClock:
    """A VM instrument recording the seconds of every call, by the called function's name."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self._started: dict[str, float] = {}

    def __call__(self, func, symbol: str, before_run: bool, ret_value, *args) -> int:
        name = BUILTIN if symbol.startswith(BUILTIN) else symbol
        if before_run:
            self._started[name] = time.perf_counter()
        else:
            self.seconds[name].append(time.perf_counter() - self._started[name])
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual


def summary(clock: KernelClock, runs: int) -> dict:
    """Per kernel: calls per inference, median ms per call and ms per inference (slowest first)."""
    kernels = {name: {"calls": len(seconds) / runs, "ms_per_call": 1e3 * float(np.median(seconds))}
               for name, seconds in clock.seconds.items()}
    for row in kernels.values():
        row["ms_per_inference"] = row["calls"] * row["ms_per_call"]
    return dict(sorted(kernels.items(), key=lambda item: -item[1]["ms_per_inference"]))


def instrumented(machines: dict, name: str, model: str, algorithm: dict, software: dict, cache,
                 threads: int) -> dict:
    """Build one variant (:func:`systems.build`) and keep its VM, with a :class:`KernelClock` as
    its instrument, in ``machines``."""
    executable, row = build(model, algorithm, software, cache, False, threads)
    device = tvm.cpu()
    machine = relax.VirtualMachine(tvm.runtime.load_module(str(executable.library)), device)
    clock = KernelClock()
    machine.set_instrument(clock)
    machines[name] = (machine, clock, tvm.runtime.tensor(IMAGES[:1], device))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--runs", type=int, default=60, help="whole-model runs per build per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--name", help="results file: benchmarks/results/NAME.json (default kernels-MODEL)")
    args = parser.parse_args()
    create_device({"device": "host-cpu", "threads": args.threads}).configure_runtime()
    results: dict = {"model": args.model, "builds": {}}
    out = ResultsFile(args.name or f"kernels-{args.model}", results, args.threads)
    machines = {}
    for name, (algorithm, software, cache, _, _) in variants([], []).items():
        if software["compiler"] == "tvm":
            out.attempt(results["builds"], name, functools.partial(instrumented, machines, name, args.model,
                                                                   algorithm, software, cache, args.threads))
    for _ in range(args.rounds):
        for machine, _, image in machines.values():
            for _ in range(args.runs):
                machine["main"](image)
    runs = args.rounds * args.runs
    results["runs"] = runs
    results["builds"].update({name: summary(clock, runs) for name, (_, clock, _) in machines.items()})
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
    print(f"saved {out.save().relative_to(ROOT)}")


if __name__ == "__main__":
    main()
