"""Modules imported on first use.

Reading the configuration, listing what is registered and planning a grid must answer in a moment,
but the modules that register the layers' techniques are the ones that run them, with PyTorch, TVM,
scikit-learn and ONNX Runtime (seconds to import). Such a module names its heavy imports lazily::

    torch = lazy_import("torch")
    relax = lazy_import("tvm.relax")

and the import happens on the first attribute read (``torch.zeros``), that is when a technique
runs, not when it registers. A module-level use (a base class, a decorator) would import at once:
such code lives in a module that is itself imported lazily.
"""

from __future__ import annotations

import importlib
import sys
import types


class LazyModule(types.ModuleType):
    """Stands for the module ``name`` and imports it when an attribute is first read."""

    def __getattr__(self, attribute: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads are plain module attributes
        return getattr(module, attribute)


def lazy_import(name: str) -> types.ModuleType:
    """The module ``name`` (dotted), imported on first use; the module itself if already imported."""
    return sys.modules.get(name) or LazyModule(name)
