"""A deployment target: what every device kind implements (see :mod:`dlas_dse.stack.devices`)."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from dlas_dse.cache import ArtifactCache
from dlas_dse.lazy import lazy_import
from dlas_dse.stack.cpu_features import cpuinfo_line
from dlas_dse.stack.measurement import CpuTimes, local_counters, set_runtime_threads

tvm = lazy_import("tvm")

HOST_CORES = os.cpu_count() or 1


@dataclass
class Device:
    """A deployment target: TVM target JSON, thread count, how to load and run an artifact there."""

    name: str
    target: dict
    threads: int
    description: str
    cores: int
    details: dict = field(default_factory=dict)
    stated_peak_gflops: float | None = None

    def tvm_target(self) -> tvm.target.Target:
        """The TVM target object."""
        return tvm.target.Target(self.target)

    def configure_runtime(self) -> None:
        """Apply this trial's thread count to the runtime (local devices: this process, and through
        TVM_NUM_THREADS the processes it starts, e.g. MetaSchedule's runners); checked."""
        os.environ["TVM_NUM_THREADS"] = str(self.threads)
        set_runtime_threads(tvm.get_global_func, self.threads, "this process",
                            "Configure the device before anything runs a TVM kernel in the process, or "
                            "measure a larger thread count in a new process.")

    def export_library(self, executable: tvm.runtime.Executable, path: Path) -> None:
        """Write ``executable`` as a shared library this device can load."""
        executable.export_library(str(path))

    def load(self, library: Path) -> tuple[tvm.runtime.Module, tvm.runtime.Device]:
        """Load a library exported by :meth:`export_library`; returns it and the device to run on."""
        return tvm.runtime.load_module(str(library)), tvm.cpu(0)

    def pin(self, affinity: str) -> list[int] | None:
        """Restrict this process to the trial's cores (``compact``: the first ``threads`` allowed);
        returns the cores, or None where the device's own runtime decides."""
        return None

    def peak(self, cache: ArtifactCache, measure: bool = True) -> dict | None:
        """The device's float32 peak (``gflops``, ``method``), or None where unknown (or, unless
        ``measure``, not measured yet)."""
        if self.stated_peak_gflops:
            return {"gflops": self.stated_peak_gflops, "method": "stated in the hardware catalogue"}
        return None

    def cpu_counters(self) -> Callable[[], CpuTimes] | None:
        """The CPU counters of the machine that runs this device's kernels (the measurement's
        interference check), or None where they cannot be read."""
        return local_counters()

    @contextlib.contextmanager
    def explained_failures(self) -> Iterator[None]:
        """Around running this device's kernels: an error says what the device knows of its cause."""
        yield

    def status(self) -> tuple[bool, str]:
        """Whether the device can be used now, and what was checked."""
        return True, "this process"

    def how_to_reach(self) -> str:
        """What to do when :meth:`status` says the device cannot be used."""
        return "choose another device (python -m dlas_dse devices lists them)"

    @property
    def emulated(self) -> bool:
        """Whether the kernels run under emulation: correct results, latency not the device's."""
        return False

    @property
    def kind(self) -> str:
        """The device's kind as shown and recorded: ``rpc``, or ``rpc, emulated``."""
        return self.details["kind"] + (", emulated" if self.emulated else "")

    def ran_on(self) -> str:
        """Where this device's kernels ran (recorded with the verification, the latency and accuracy)."""
        return f"this process ({self.description})"


def cpu_model() -> str:
    """The host CPU's model name, e.g. 'AMD EPYC 9R45'."""
    return cpuinfo_line("model name") or platform.processor() or platform.machine()
