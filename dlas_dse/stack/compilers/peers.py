"""What the compilers beside TVM (eager PyTorch, ONNX Runtime) share: the folded model in its
precision's dtype, timing a call, and a build cached with the same record as the tvm compiler's.
Neither applies layer-4 algorithms (a built-in rule, from the compilers' ``applies_layer4`` trait)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from dlas_dse.cache import ArtifactCache, code_fingerprint, package_modules
from dlas_dse.lazy import lazy_import
from dlas_dse.stack.compilers.base import BuildRequest
from dlas_dse.stack.compilers.frontend import count_macs, fold_batchnorm, to_relax
from dlas_dse.stack.relax_util import visit_functions

torch = lazy_import("torch")
nn = lazy_import("torch.nn")

FLOAT_DTYPES = ("float32", "float16")
"""Precisions deployed as the model's own dtype (int8: ONNX Runtime quantises the float32 model)."""


def time_calls(call: Callable[[], object], count: int) -> list[float]:
    """Seconds of each of ``count`` calls."""
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def folded_model(request: BuildRequest) -> nn.Module:
    """The BatchNorm-folded model in its precision's dtype (float32 for int8, quantised later)."""
    return fold_batchnorm(request.model).to(getattr(torch, request.precision if request.precision in FLOAT_DTYPES else "float32"))


def cached_build(request: BuildRequest, cache: ArtifactCache, versions: dict,
           create: Callable[[Path], dict]) -> tuple[Path, dict]:
    """Cache what ``create(directory)`` writes under the stage "build" (key: model, batch, precision,
    compiler parameters, ``versions``, code); returns the directory and the build record shared
    with the tvm compiler."""
    inputs = {"model": request.model_key, "batch_size": request.batch_size, "precision": request.precision,
              "software": request.software, "versions": {"torch": torch.__version__, **versions},
              "code": code_fingerprint(*package_modules(__package__), sys.modules[visit_functions.__module__])}

    def create_with_profile(directory: Path) -> dict:
        return {"macs": count_macs(to_relax(request.model, (1, *request.image_shape))), **create(directory)}

    started = time.perf_counter()
    directory, hit = cache.get_or_create("build", inputs, create_with_profile)
    metadata = cache.metadata(directory)
    return directory, {"hit": hit, "build_key": directory.name, "seconds": time.perf_counter() - started,
                       **{k: v for k, v in metadata.items() if k not in ("inputs", "seconds", "created")}}


