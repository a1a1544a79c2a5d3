"""The ``pytorch`` compiler: eager PyTorch in inference mode, the BatchNorm-folded model at the
compression's precision (float32 or float16; it has no int8 deployment: a built-in rule keeps that
combination out of every search space)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlas_dse.cache import ArtifactCache
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPILERS, Rule
from dlas_dse.stack.compilers.base import Build, BuildRequest, Executable
from dlas_dse.stack.compilers.peers import FLOAT_DTYPES, cached_build, folded_model, time_calls

torch = lazy_import("torch")
nn = lazy_import("torch.nn")


class PyTorchExecutable(Executable):
    """Eager PyTorch in inference mode, with the device's thread count."""

    def __init__(self, model: nn.Module, batch_size: int, threads: int):
        self.model, self.batch_size, self.threads = model, batch_size, threads
        self._dtype = next(model.parameters()).dtype

    def _input(self, batch: np.ndarray) -> torch.Tensor:
        torch.set_num_threads(self.threads)
        return torch.from_numpy(np.ascontiguousarray(batch)).to(self._dtype)

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(self._input(batch)).float().numpy()

    def time_runs(self, batch: np.ndarray, count: int) -> list[float]:
        inputs = self._input(batch)
        with torch.inference_mode():
            return time_calls(lambda: self.model(inputs), count)


@COMPILERS.register("pytorch")
def pytorch_compiler(request: BuildRequest, cache: ArtifactCache) -> Build:
    """Eager PyTorch: the folded model in its precision's dtype (float32 or float16), no compilation."""
    if request.precision not in FLOAT_DTYPES:
        raise ValueError(f"eager PyTorch deploys {' or '.join(FLOAT_DTYPES)}, not {request.precision} "
                         "(built-in rule pytorch-has-no-int8)")
    model = folded_model(request)

    def create(directory: Path) -> dict:
        return {"deployed_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}

    _, record = cached_build(request, cache, {}, create)
    return Build(PyTorchExecutable(model, request.batch_size, request.device.threads), record)


COMPILERS.rules.append(
    Rule("pytorch-has-no-int8", {"software.compiler": ("pytorch",), "compression.technique": ("int8",)}, {},
         "eager PyTorch has no int8 deployment here; use compiler tvm or onnxruntime for int8"))
