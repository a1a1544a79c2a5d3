"""Sparse (CSR) variants of direct, gemm and spatial_pack for weight-pruned models."""

from __future__ import annotations

import numpy as np

from dlas_dse.stack.algorithms.conv import ConvSpec
from dlas_dse.stack.algorithms.lowering import Lowering, NotApplicable


def sparse_lowering(algorithm: str, spec: ConvSpec, weight: np.ndarray) -> Lowering:
    """CSR lowering of ``algorithm`` for one convolution."""
    raise NotApplicable("sparse kernels are not written yet")
