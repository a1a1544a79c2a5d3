"""Layer 5, systems software: compile a model for a device and run it.

Every compiler returns an :class:`Executable`; the TVM compiler imports the model with
``torch.export`` into Relax (BatchNorm folded first), applies the layer-4 rewrite, builds for the
device's target and caches the shared library by a hash of everything upstream.
"""

from __future__ import annotations

import json
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dlas_dse.cache import ArtifactCache, code_fingerprint, package_modules
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPILERS, Param
from dlas_dse.stack.algorithms.auto import KernelTimes, layer4_modules
from dlas_dse.stack.algorithms.schedule import build_pipeline
from dlas_dse.stack.devices import Device
from dlas_dse.stack.measurement import CpuTimes, local_counters
from dlas_dse.stack.relax_util import visit_functions
from dlas_dse.stack.tuning.allowance import TuningBudget
from dlas_dse.stack.tuning.database import TuningDatabase

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
tvm = lazy_import("tvm")
fx_optimization = lazy_import("torch.fx.experimental.optimization")
relax = lazy_import("tvm.relax")
torch_frontend = lazy_import("tvm.relax.frontend.torch")
precisions = lazy_import("dlas_dse.stack.precision")
rewrite = lazy_import("dlas_dse.stack.algorithms.rewrite")
tuning_search = lazy_import("dlas_dse.stack.tuning.search")


class Executable(ABC):
    """A compiled model for a fixed batch size on one device."""

    batch_size: int

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for ``batch`` (shape ``(batch_size, C, H, W)``)."""

    @abstractmethod
    def time_runs(self, batch: np.ndarray, count: int) -> list[float]:
        """Run ``count`` times on ``batch``; seconds of each run."""

    def cpu_counters(self) -> Callable[[], CpuTimes] | None:
        """The CPU counters of the machine the runs execute on (None: unknown), for the
        measurement's interference check."""
        return local_counters()


@dataclass(kw_only=True)
class BuildRequest:
    """What to compile: the deployable model (and the hash of what produced it), for which batch,
    with which layer-4 and layer-5 parameters, for which device."""

    model: nn.Module
    model_key: dict
    image_shape: tuple[int, int, int]
    batch_size: int
    algorithm: dict
    software: dict
    device: Device
    precision: str = "float32"
    calibration: dict | None = None
    """int8: the compression's input scale per layer."""
    calibration_images: np.ndarray | None = None
    """int8: the images that set ``calibration``, for compilers that calibrate themselves (onnxruntime)."""
    tune: bool = True
    """Whether the build may spend time tuning (evaluation builds reuse the tuning database only)."""


@dataclass(frozen=True)
class Build:
    """What a compiler hands back: the executable and the build record the trial stores (``hit``,
    ``build_key``, ``seconds``, ``macs``, ``deployed_bytes`` and what the compiler adds)."""

    executable: Executable
    record: dict

    @property
    def key(self) -> str:
        """The build's cache entry."""
        return self.record["build_key"]

    @property
    def hit(self) -> bool:
        """Whether the build came from the cache."""
        return self.record["hit"]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one image."""
        return self.record["macs"]

    @property
    def deployed_bytes(self) -> int:
        """Bytes of the parameters as deployed."""
        return self.record["deployed_bytes"]

    @property
    def verified_against(self) -> str | None:
        """The precision whose PyTorch reference the executable must match, where its arithmetic
        is not the requested precision's (ONNX Runtime's own int8: float32); None: the requested one."""
        return self.record.get("verified_against")

    @property
    def tolerance(self) -> float:
        """The compiler's own tolerance against that reference (0: the compression's holds)."""
        return self.record.get("tolerance", 0.0)


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


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the preceding convolution (inference only)."""
    return fx_optimization.fuse(model.eval())


def to_relax(model: nn.Module, input_shape: tuple[int, ...]) -> tvm.IRModule:
    """Import ``model`` at a static input shape (in its parameters' dtype) into a Relax module
    with constant weights."""
    example = torch.zeros(input_shape, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        program = torch.export.export(fold_batchnorm(model), (example,))
    return torch_frontend.from_exported_program(program, keep_params_as_input=False, unwrap_unit_return_tuple=True)


def deployed_bytes(mod: tvm.IRModule) -> int:
    """Bytes of the constant tensors (weights, biases) the module deploys, in their stored dtypes
    (scalar constants such as a ReLU6 bound are not parameters and not counted)."""
    total = 0

    def visit(expr: relax.Expr) -> None:
        nonlocal total
        if isinstance(expr, tvm.ir.expr.GenericConst) and len(expr.value.shape):
            total += expr.value.numpy().nbytes

    visit_functions(mod, visit)
    return total


def _shape(expr: relax.Expr) -> list[int]:
    if isinstance(expr, tvm.ir.expr.GenericConst):
        return list(expr.value.shape)
    return [int(d) for d in expr.ty.shape]


def count_macs(mod: tvm.IRModule) -> int:
    """Multiply-accumulates of the module's convolutions and matrix multiplications."""
    total = 0

    def visit(expr: relax.Expr) -> None:
        nonlocal total
        if not (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)):
            return
        if expr.op.name == "relax.nn.conv2d":
            _, in_per_group, kernel_h, kernel_w = _shape(expr.args[1])
            total += int(np.prod(_shape(expr))) * in_per_group * kernel_h * kernel_w
        elif expr.op.name == "relax.matmul":
            total += int(np.prod(_shape(expr))) * _shape(expr.args[0])[-1]

    visit_functions(mod, visit)
    return total


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
    "tvm",
    tuning=Param(str, default="untuned", choices=("untuned", "metaschedule"),
                 help="untuned: the project's default schedule per algorithm; metaschedule: auto-scheduling "
                      "(XGBoost cost model, evolutionary search) with the shared database of the target and thread count"),
    trials_per_task=Param(int, default=16, low=1, high=100000, help="measured candidates per tuning task"),
    max_trials=Param(int, default=0, low=0, help="cap on measured candidates over all tasks (0: no cap)"),
    tuning_timeout_s=Param(float, default=0.0, low=0.0, help="stop tuning after this many seconds (0: no limit)"))
def tvm_compiler(request: BuildRequest, cache: ArtifactCache) -> Build:
    """Apache TVM (Relax): torch.export import, layer-4 rewrite, default schedules or MetaSchedule
    tuning, build for the device's target."""
    inputs = {"model": request.model_key, "batch_size": request.batch_size, "precision": request.precision,
              "tune": request.tune and request.software["tuning"] != "untuned",  # untuned: one build either way
              "algorithm": request.algorithm, "software": request.software,
              "target": request.device.target, "tvm": tvm.__version__,
              "code": code_fingerprint(sys.modules[__name__], sys.modules[precisions.PRECISIONS["int8"].lower.__module__],
                                       sys.modules[visit_functions.__module__], *package_modules("dlas_dse.stack.tuning"),
                                       *layer4_modules())}

    def create(directory: Path) -> dict:
        folded = fold_batchnorm(request.model)
        mod = to_relax(folded, (request.batch_size, *request.image_shape))
        profile = {"macs": count_macs(mod) // request.batch_size,
                   "input_dtype": str(next(request.model.parameters()).dtype).replace("torch.", "")}
        mod, precision_record = precisions.PRECISIONS[request.precision].lower(mod, folded, request.calibration or {})
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


def reference_model(model: nn.Module, precision: str, calibration: dict | None) -> nn.Module:
    """The PyTorch model a compiled artifact of ``model`` at ``precision`` must reproduce."""
    return precisions.PRECISIONS[precision].reference(fold_batchnorm(model), calibration or {}).eval()


def float64_reference(model: nn.Module, precision: str) -> nn.Module | None:
    """The float32 reference of ``model`` computed in float64, to measure how much float32 rounding
    moves its output; None for the other precisions (their tolerance states how much they round)."""
    return reference_model(model, "float32", None).double() if precision == "float32" else None


def compile_model(request: BuildRequest, cache: ArtifactCache) -> Build:
    """Compile with ``request.software["compiler"]``."""
    return COMPILERS.get(request.software["compiler"]).function(request, cache)
