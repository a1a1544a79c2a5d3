"""The ``tvm`` compiler: it imports the model with
``torch.export`` into Relax (BatchNorm folded first), applies the layer-4 rewrite, builds for the
device's target and caches the shared library by a hash of everything upstream.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dlas_dse.cache import ArtifactCache, code_fingerprint, package_modules
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPILERS, Param
from dlas_dse.stack.algorithms.auto import KernelTimes, layer4_modules
from dlas_dse.stack.algorithms.schedule import build_pipeline
from dlas_dse.stack.compilers.base import Build, BuildRequest, Executable
from dlas_dse.stack.compilers.frontend import count_macs, deployed_bytes, fold_batchnorm, to_relax
from dlas_dse.stack.compression import precisions
from dlas_dse.stack.devices import Device
from dlas_dse.stack.measurement import CpuTimes
from dlas_dse.stack.relax_util import visit_functions
from dlas_dse.stack.tuning.allowance import TuningBudget
from dlas_dse.stack.tuning.database import TuningDatabase

tvm = lazy_import("tvm")
relax = lazy_import("tvm.relax")
rewrite = lazy_import("dlas_dse.stack.algorithms.rewrite")
tuning_search = lazy_import("dlas_dse.stack.tuning.search")


class TVMExecutable(Executable):
    """A Relax VM over a compiled shared library, loaded on the device at its first run (on a
    remote board: uploaded and loaded there)."""

    def __init__(self, library: Path, device: Device, batch_size: int, input_dtype: str):
        self.batch_size, self.library = batch_size, library
        self._input_dtype, self._target_device = input_dtype, device
        self._vm: relax.VirtualMachine | None = None
        self._device: tvm.runtime.Device | None = None

    def _loaded(self) -> tuple[relax.VirtualMachine, tvm.runtime.Device]:
        if self._vm is None:
            with self._target_device.explained_failures():
                module, self._device = self._target_device.load(self.library)
                self._vm = relax.VirtualMachine(module, self._device)
        return self._vm, self._device

    def _input(self, batch: np.ndarray, device: tvm.runtime.Device) -> tvm.runtime.Tensor:
        return tvm.runtime.tensor(np.ascontiguousarray(batch, dtype=self._input_dtype), device)

    def run(self, batch: np.ndarray) -> np.ndarray:
        vm, device = self._loaded()
        with self._target_device.explained_failures():
            return vm["main"](self._input(batch, device)).numpy().astype(np.float32)

    def cpu_counters(self) -> Callable[[], CpuTimes] | None:
        self._loaded()
        return self._target_device.cpu_counters()

    def time_runs(self, batch: np.ndarray, count: int) -> list[float]:
        vm, device = self._loaded()
        with self._target_device.explained_failures():
            return list(vm.time_evaluator("main", device, number=1, repeat=count)(self._input(batch, device)).results)


def _schedule(mod: tvm.IRModule, request: BuildRequest, cache: ArtifactCache) -> tuple[tvm.ir.transform.Pass, dict]:
    """The build pipeline for ``request.software``'s tuning, after tuning what the shared
    database lacks (an evaluation build, ``request.tune`` false, uses the database as it is)."""
    target = request.device.tvm_target()
    software, default_scheduled = request.software, []
    if software["tuning"] == "untuned":
        return build_pipeline(target, scheduled=default_scheduled), {"default_scheduled": default_scheduled}
    if request.tune:
        budget = TuningBudget(software["trials_per_task"], software["max_trials"], software["tuning_timeout_s"])
        database, record = tuning_search.tune(mod, request.device, cache, budget)
    else:
        database, record = TuningDatabase(cache, target, request.device.threads).open(), {"tuned_tasks": 0, "note": "database only"}
    return build_pipeline(target, database, default_scheduled), {**record, "default_scheduled": default_scheduled}


@COMPILERS.register(
    "tvm", traits={"applies_layer4": True},
    tuning=Param(str, default="untuned", choices=("untuned", "metaschedule"),
                 help="untuned: the project's default schedule per algorithm; metaschedule: auto-scheduling "
                      "(XGBoost cost model, evolutionary search) with the shared database of the target and thread count"),
    trials_per_task=Param(int, default=16, low=1, high=100000, help="measured candidates per tuning task"),
    max_trials=Param(int, default=0, low=0, help="cap on measured candidates over all tasks (0: no cap)"),
    tuning_timeout_s=Param(float, default=0.0, low=0.0, help="stop tuning after this many seconds (0: no limit)"))
def tvm_compiler(request: BuildRequest, cache: ArtifactCache) -> Build:
    """Apache TVM (Relax): torch.export import, layer-4 rewrite, default schedules or MetaSchedule
    tuning, build for the device's target."""
    tuned = request.tune and request.software["tuning"] != "untuned"  # untuned: one build either way
    inputs = {"model": request.model_key, "batch_size": request.batch_size, "precision": request.precision,
              "tune": tuned, **({"threads": request.device.threads} if tuned else {}),  # tuned at its threads
              "algorithm": request.algorithm, "software": request.software,
              "target": request.device.target, "tvm": tvm.__version__,
              "code": code_fingerprint(*package_modules(__package__), *package_modules("dlas_dse.stack.compression"),
                                       sys.modules[visit_functions.__module__], *package_modules("dlas_dse.stack.tuning"),
                                       *layer4_modules())}

    def create(directory: Path) -> dict:
        folded = fold_batchnorm(request.model)
        mod = to_relax(folded, (request.batch_size, *request.image_shape))
        profile = {"macs": count_macs(mod) // request.batch_size,
                   "input_dtype": str(next(request.model.parameters()).dtype).replace("torch.", "")}
        mod, precision_record = precisions.precision(request.precision).lower(mod, folded, request.calibration or {})
        mod, algorithm_record = rewrite.apply_algorithm(mod, request.algorithm, request.device.tvm_target(),
                                                KernelTimes(request.device, cache))
        profile["deployed_bytes"] = deployed_bytes(mod)  # as deployed: CSR arrays, winograd-transformed weights
        pipeline, tuning = _schedule(mod, request, cache)
        request.device.export_library(tvm.compile(mod, request.device.tvm_target(), relax_pipeline=pipeline),
                                      directory / "model.so")
        return {**profile, **precision_record, **algorithm_record, "tuning": tuning}

    started = time.perf_counter()
    directory, hit = cache.get_or_create("build", inputs, create)
    metadata = json.loads((directory / "meta.json").read_text())
    executable = TVMExecutable(directory / "model.so", request.device, request.batch_size,
                               metadata["input_dtype"])
    record = {"hit": hit, "build_key": directory.name, "seconds": time.perf_counter() - started,
              "deployed_bytes": metadata["deployed_bytes"], "macs": metadata["macs"],
              **{k: metadata[k] for k in ("convolutions_by_algorithm", "algorithm_fallbacks", "convolutions",
                                          "tuning")},
              **{k: metadata[k] for k in ("int8_layers", "float_layers") if k in metadata}}
    return Build(executable, record)


