"""``auto``: each convolution gets the algorithm measured fastest for its shape on the trial's device.

The choice comes from a per-device table of kernel times (:class:`KernelTimes`): every other
algorithm is built for the convolution alone (its shape, layout, format and dtypes, with the
layer-4 parameters of the trial), run on the device in alternating rounds, and the median times are
cached in the artifact cache — one entry per shape, device, target and thread count, keyed by the
code of layer 4, so every trial (and every worker sharing the cache) reuses it until that code
changes. The trial's record says, for each convolution, which algorithm won and the times it beat.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dlas_dse.cache import ArtifactCache, code_fingerprint, package_modules
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import ALGORITHMS
from dlas_dse.stack.algorithms.conv import ConvSpec, conv_module
from dlas_dse.stack.algorithms.lowering import Lowering, NotApplicable
from dlas_dse.stack.algorithms.schedule import build_pipeline
from dlas_dse.stack.measurement import LatencyStats, measure_latency

tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")
rewrite = lazy_import("dlas_dse.stack.algorithms.rewrite")

ROUNDS = 3
"""Alternating rounds in which every candidate is timed (median of the rounds' figures)."""
WINDOW = {"warmup_runs": 2, "min_repeats": 5, "max_repeats": 400, "min_time_s": 0.05, "rounds": 1,
          "max_discarded": 3}
"""One candidate's timed window in a round (:func:`~dlas_dse.stack.measurement.measure_latency`: a
window other processes disturbed is retimed, a few times at most)."""


def layer4_modules() -> list:
    """The modules of layer 4 (their code is part of every build's and every kernel time's key)."""
    return package_modules(__name__.rpartition(".")[0])


def candidates() -> list[str]:
    """Every algorithm ``auto`` chooses among: all registered ones but itself and those that put the
    whole model in their own layout (nchwc: one convolution's time alone would be its layout
    transforms' as much as its own)."""
    return [name for name in ALGORITHMS.names() if name != "auto" and not ALGORITHMS.trait(name, "layouts")]


def _timing_weight(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """A weight of ``weight``'s shape, dtype and density (the values do not change a kernel's time;
    a sparse format's does depend on how many are zero)."""
    rng = np.random.default_rng(0)
    keep = rng.random(weight.shape) < np.count_nonzero(weight) / weight.size
    values = rng.integers(1, 100, weight.shape) if weight.dtype.kind == "i" else rng.standard_normal(weight.shape) + 3
    return (values * keep).astype(weight.dtype)


def _time_runs(machine: relax.VirtualMachine, device, data, count: int) -> list[float]:
    return list(machine.time_evaluator("conv0", device, number=1, repeat=count)(data).results)


def _input(spec: ConvSpec) -> np.ndarray:
    shape = (spec.batch, spec.in_channels, spec.height, spec.width)
    rng = np.random.default_rng(1)
    if np.dtype(spec.data_dtype).kind == "i":
        return rng.integers(-100, 100, shape).astype(spec.data_dtype)
    return rng.standard_normal(shape).astype(spec.data_dtype)


@dataclass
class KernelTimes:
    """The table of measured kernel times of one device (threads included), kept in ``cache``."""

    device: object
    cache: ArtifactCache

    def inputs(self, spec: ConvSpec, params: dict, weight: np.ndarray) -> dict:
        """What a shape's kernel times depend on: its cache key."""
        return {"conv": asdict(spec), "params": _plain(params), "device": self.device.name,
                "target": self.device.target, "threads": self.device.threads, "tvm": tvm.__version__,
                "density": round(float(np.count_nonzero(weight) / weight.size), 2)
                if params.get("format") == "sparse" else 1.0,
                "code": code_fingerprint(*layer4_modules())}

    def times(self, spec: ConvSpec, weight: np.ndarray, params: dict) -> dict[str, float]:
        """Milliseconds of every candidate that computes this convolution (measured on a miss)."""
        def create(directory: Path) -> dict:
            measured = self._measure(spec, _timing_weight(spec, weight), params, directory)
            (directory / "times.json").write_text(json.dumps(measured, indent=1))
            return {"measured": list(measured["ms"])}

        directory, _ = self.cache.get_or_create("kernel-times", self.inputs(spec, params, weight), create)
        return json.loads((directory / "times.json").read_text())["ms"]

    def _measure(self, spec: ConvSpec, weight: np.ndarray, params: dict, directory: Path) -> dict:
        target, machines, skipped = self.device.tvm_target(), {}, {}
        for name in candidates():
            mod, record = rewrite.apply_algorithm(conv_module([spec], [weight]), {**params, "conv": name}, target)
            used = record["convolutions"][0]
            if "fallback_reason" in used:
                skipped[name] = used["fallback_reason"]
                continue
            library = directory / f"{name}.so"
            self.device.export_library(tvm.compile(mod, target, relax_pipeline=build_pipeline(target)), library)
            module, device = self.device.load(library)
            machine = relax.VirtualMachine(module, device)
            machines[name] = functools.partial(_time_runs, machine, device, tvm.runtime.tensor(_input(spec), device))
        counters = self.device.cpu_counters()
        rounds: dict[str, list[LatencyStats]] = {name: [] for name in machines}
        for _ in range(ROUNDS):
            for name, time_runs in machines.items():
                rounds[name].append(measure_latency(time_runs, counters=counters, **WINDOW))
        for library in directory.glob("*.so"):
            library.unlink()  # only the times are kept
        return {"ms": {name: float(np.median([s.latency_ms for s in stats])) for name, stats in rounds.items()},
                "noisy_windows": {name: sum(s.noisy for s in stats) for name, stats in rounds.items()},
                "not_applicable": skipped, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _plain(params: dict) -> dict:
    """The layer-4 parameters a kernel's time depends on (not the choice itself, nor objects)."""
    return {k: v for k, v in sorted(params.items()) if k not in ("conv", "target", "kernel_times")}


@ALGORITHMS.register("auto")
def auto(spec: ConvSpec, weight: np.ndarray, params: dict) -> Lowering:
    """Each convolution the algorithm measured fastest for its shape on the trial's device (a
    per-device table of kernel times, measured once per shape and cached)."""
    table: KernelTimes | None = params.get("kernel_times")
    if table is None:
        raise NotApplicable("auto measures kernels on the trial's device; none was given")
    times = table.times(spec, weight, params)
    fastest = min(times, key=times.get)
    lowering = ALGORITHMS.get(fastest).function(spec, weight, {**params, "conv": fastest})
    lowering.why = "fastest here: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in sorted(times.items(),
                                                                                        key=lambda item: item[1]))
    return lowering
