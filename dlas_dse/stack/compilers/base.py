"""What every compiler shares: the :class:`Executable` it returns, the :class:`BuildRequest` it is
given and the :class:`Build` it answers, the PyTorch reference a build must match, and
:func:`compile_model`, which dispatches to the registered compiler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dlas_dse.cache import ArtifactCache
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPILERS
from dlas_dse.stack.compilers.frontend import fold_batchnorm
from dlas_dse.stack.compression import precisions
from dlas_dse.stack.devices import Device
from dlas_dse.stack.measurement import CpuTimes, local_counters

nn = lazy_import("torch.nn")


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


def reference_model(model: nn.Module, precision: str, calibration: dict | None) -> nn.Module:
    """The PyTorch model a compiled artifact of ``model`` at ``precision`` must reproduce."""
    return precisions.precision(precision).reference(fold_batchnorm(model), calibration or {}).eval()


def float64_reference(model: nn.Module, precision: str) -> nn.Module | None:
    """The float32 reference of ``model`` computed in float64, to measure how much float32 rounding
    moves its output; None for the other precisions (their tolerance states how much they round)."""
    return reference_model(model, "float32", None).double() if precision == "float32" else None


def compile_model(request: BuildRequest, cache: ArtifactCache) -> Build:
    """Compile with ``request.software["compiler"]``."""
    return COMPILERS.get(request.software["compiler"]).function(request, cache)
