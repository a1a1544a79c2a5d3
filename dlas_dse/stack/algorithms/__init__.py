"""Layer 4, algorithms and data formats: a Relax rewrite of the model's convolutions into the
chosen algorithm (direct, gemm, spatial_pack, winograd, nchwc), data layout (NCHW, NHWC) and weight
format (dense, sparse CSR), each with a default schedule written by the project; ``auto`` picks
per convolution the one measured fastest on the trial's device."""

from dlas_dse.registry import ALGORITHMS, Rule
from dlas_dse.stack.algorithms import direct, gemm, spatial_pack, winograd, nchwc  # noqa: F401  (registration order = default first)
from dlas_dse.stack.algorithms.auto import KernelTimes, layer4_modules
from dlas_dse.stack.algorithms.schedule import build_pipeline

ALGORITHMS.rules += [
    Rule("sparse-needs-weight-pruning", {"algorithm.format": ("sparse",)},
         {"compression.technique": ("weight_pruning",)},
         "sparse (CSR) weights only pay off for a weight-pruned model"),
    Rule("nchwc-chooses-its-layout", {"algorithm.conv": ("nchwc",)}, {"algorithm.layout": ("NCHW",)},
         "nchwc puts the model in blocked channels (NCHW[x]c) itself; algorithm.layout stays NCHW"),
    Rule("nchwc-is-dense", {"algorithm.conv": ("nchwc",), "algorithm.format": ("sparse",)}, {},
         "nchwc packs dense weight blocks; it has no sparse variant"),
    Rule("winograd-is-dense", {"algorithm.conv": ("winograd",), "algorithm.format": ("sparse",)}, {},
         "winograd transforms the weights into a dense tile space; it has no sparse variant"),
]

__all__ = ["apply_algorithm", "convolutions", "build_pipeline", "KernelTimes", "layer4_modules"]


def __getattr__(name: str):
    """The Relax rewrite (``apply_algorithm``, ``convolutions``) is imported on first use: its
    mutator class needs TVM at import, and registering the algorithms must not."""
    if name in ("apply_algorithm", "convolutions"):
        from dlas_dse.stack.algorithms import rewrite

        return getattr(rewrite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
