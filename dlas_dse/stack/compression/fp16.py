"""float16 weights and activations: the compiler lowers the deployed module to half precision."""

from __future__ import annotations

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPRESSIONS
from dlas_dse.stack.compression.base import FineTune
from dlas_dse.stack.compression.precisions import PRECISIONS, Precision
from dlas_dse.stack.datasets import Dataset

nn = lazy_import("torch.nn")
lowering = lazy_import("dlas_dse.stack.compression._fp16_lowering")


@COMPRESSIONS.register("fp16", traits={"weight_bits": 16})
def fp16(model: nn.Module, dataset: Dataset, params: dict, fine_tune: FineTune) -> tuple[nn.Module, dict]:
    """Weights and activations in float16: the compiler lowers the deployed module to half precision;
    it is checked against the fp32 PyTorch model within 5% of the largest logit."""
    return model, {"precision": "float16", "tolerance": 5e-2}


@PRECISIONS.register("float16")
def float16() -> Precision:
    """Weights and activations in float16 (input and output stay float32 at the boundary); the
    reference is the fp32 model."""
    return Precision(lowering.to_float16)
