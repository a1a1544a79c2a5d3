"""Device kind ``local-cpu``: this machine's CPU, at the catalogue's target (e.g. an older
instruction-set level) or the detected ``-mcpu``."""

from __future__ import annotations

import os

from dlas_dse.cache import ArtifactCache
from dlas_dse.stack.cpu_features import system_cpu, why_not_runnable_here
from dlas_dse.stack.devices.base import Device, cpu_model
from dlas_dse.stack.devices.catalogue import DEVICE_KINDS, CatalogueEntry
from dlas_dse.stack.peak import cpu_peak


class LocalCPU(Device):
    """This machine's CPU: the peak is measured here (once per cache, CPU and thread count)."""

    def pin(self, affinity: str) -> list[int] | None:
        if affinity == "none" or not hasattr(os, "sched_setaffinity"):
            return None
        cores = sorted(os.sched_getaffinity(0))[:self.threads]
        os.sched_setaffinity(0, cores)
        self.configure_runtime()  # the runtime's worker threads start again, on these cores
        return cores

    def peak(self, cache: ArtifactCache, measure: bool = True) -> dict | None:
        if measure:
            self.configure_runtime()  # measured at the device's threads, for its target
        return super().peak(cache) or cpu_peak(cache, self.description, self.threads, measure, self.target)

    def status(self) -> tuple[bool, str]:
        why_not = why_not_runnable_here(self.target)
        if why_not:
            return False, f"{why_not} ({self.description})"
        return True, f"{self.cores} cores, -mcpu {self.target.get('mcpu')}"


@DEVICE_KINDS.register("local-cpu")
def local_cpu(entry: CatalogueEntry, threads: int) -> Device:
    """This CPU, through the catalogue's target or the detected ``-mcpu``."""
    target = dict(entry.target or {"kind": "llvm", "mcpu": system_cpu()})
    target.setdefault("num-cores", entry.cores)
    return LocalCPU(entry.name, target, threads, cpu_model(), entry.cores, {"kind": entry.kind}, entry.peak_gflops)
