"""What MetaSchedule's build and RPC runner processes run. Every such process imports this module
when it starts, so it imports TVM (which loads PyTorch itself) and nothing of the stack:
``dlas_dse.stack`` would add its registries, torchvision and scikit-learn, ~4 s per process on this
machine."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import linecache
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import tvm
from tvm import rpc
from tvm.s_tir.meta_schedule.builder import local_builder
from tvm.s_tir.meta_schedule.runner import rpc_runner


@contextlib.contextmanager
def _light_inspect_stack() -> Iterator[None]:
    """``inspect.stack()`` without resolving each frame's module: importing TVM's tensor
    intrinsics parses ~500 TVMScript functions, each calling ``inspect.stack()``, which otherwise
    scans every loaded module for every frame (minutes instead of seconds with PyTorch loaded)."""
    original = inspect.stack

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            frames.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name,
                                            [line] if line else None, 0 if line else None, positions=None))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = original


def load_tensor_intrinsics() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` (MetaSchedule needs it) quickly; also run once in every
    build process."""
    if "tvm.s_tir.tensor_intrin" not in sys.modules:
        with _light_inspect_stack():
            importlib.import_module("tvm.s_tir.tensor_intrin")


def export_with(compiler: str, module: tvm.runtime.Module) -> str:
    """Export a candidate as a shared library linked by ``compiler`` (a board's cross compiler)."""
    path = str(Path(tempfile.mkdtemp()) / "candidate.so")
    module.export_library(path, fcompile=tvm.support.cc.cross_compiler(compiler))
    return path


def build_candidate(arguments: tuple) -> str:
    """Build and export one candidate (MetaSchedule's own build step); returns the artifact's path."""
    return local_builder._worker_func(*arguments)


def board_session(threads: int, config: rpc_runner.RPCConfig) -> rpc.RPCSession:
    """A session for MetaSchedule's RPC runner whose board runs the trial's ``threads`` (its
    default session leaves the board's whole thread pool, unlike the trial's own session)."""
    session = rpc_runner.default_create_session(config)
    session.get_function("runtime.config_threadpool")(1, threads)
    return session
