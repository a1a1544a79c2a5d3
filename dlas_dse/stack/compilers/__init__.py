"""Layer 5, systems software: compile a model for a device and run it.

One module per compiler — ``tvm`` (Relax, the layer-4 rewrite, default schedules or MetaSchedule),
``pytorch`` (eager) and ``onnxruntime`` — each registering itself in ``COMPILERS`` with its
parameters and traits (``applies_layer4``: whether layer-4 algorithms apply to it); every public
module of the package is imported, so a new compiler is one new module. Every compiler answers a
:class:`Build` of an :class:`Executable` (``base``); ``frontend`` takes a PyTorch model into Relax
and weighs it; ``peers`` holds what the compilers beside TVM share.
"""

from dlas_dse.registry import COMPILERS, Rule, import_modules

import_modules(__name__, __path__, first=("tvm", "pytorch", "onnxruntime"))  # each module registers its compiler

_LAYER4 = tuple(name for name in COMPILERS.names() if COMPILERS.trait(name, "applies_layer4", False))
COMPILERS.rules.append(Rule(
    "layer-4-needs-tvm", {"software.compiler": tuple(n for n in COMPILERS.names() if n not in _LAYER4)},
    {"algorithm.conv": ("direct",), "algorithm.layout": ("NCHW",), "algorithm.format": ("dense",)},
    f"layer-4 algorithms apply only to the {' or '.join(_LAYER4)} compiler"))

# re-exported after import_modules, so that compilers register in the order above
from dlas_dse.stack.compilers.base import (Build, BuildRequest, Executable, compile_model,  # noqa: E402
                                           float64_reference, reference_model)
from dlas_dse.stack.compilers.frontend import count_macs, deployed_bytes, fold_batchnorm, to_relax  # noqa: E402
from dlas_dse.stack.compilers.tvm import TVMExecutable  # noqa: E402

__all__ = ["Build", "BuildRequest", "Executable", "TVMExecutable", "compile_model", "count_macs", "deployed_bytes",
           "float64_reference", "fold_batchnorm", "reference_model", "to_relax"]
