"""Device kind ``cuda``: the first local NVIDIA GPU (only the tvm compiler deploys to it; host
threads do not change its trials)."""

from __future__ import annotations

import shutil
from pathlib import Path

from dlas_dse.lazy import lazy_import
from dlas_dse.stack.devices.base import Device
from dlas_dse.stack.devices.catalogue import DEVICE_KINDS, CatalogueEntry

tvm = lazy_import("tvm")


class CudaGPU(Device):
    """The first local NVIDIA GPU."""

    def configure_runtime(self) -> None:
        """Host threads do not matter to a GPU trial."""

    def load(self, library: Path) -> tuple[tvm.runtime.Module, tvm.runtime.Device]:
        return tvm.runtime.load_module(str(library)), tvm.cuda(0)

    def status(self) -> tuple[bool, str]:
        return cuda_status()


def cuda_status() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable here, and which one (or why not)."""
    if not Path("/proc/driver/nvidia").exists() and shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA driver on this machine (neither /proc/driver/nvidia nor nvidia-smi)"
    try:
        device = tvm.cuda(0)
        if device.exist:
            return True, f"{device.device_name}, compute {device.compute_version}"
    except (RuntimeError, ValueError) as error:
        return False, f"CUDA unavailable: {error}"
    return False, "no CUDA GPU visible to TVM"


def _cuda_target() -> dict:
    """The local GPU's target with the attributes MetaSchedule needs."""
    device = tvm.cuda(0)
    return {"kind": "cuda", "arch": "sm_" + device.compute_version.replace(".", ""),
            "max_threads_per_block": device.max_threads_per_block,
            "max_shared_memory_per_block": device.max_shared_memory_per_block,
            "thread_warp_size": device.warp_size}


@DEVICE_KINDS.register("cuda", traits={"tvm_only": True, "host_threads": False})
def cuda(entry: CatalogueEntry, threads: int) -> Device:
    """The first local GPU, at the catalogue's target or the detected one."""
    available, why = cuda_status()
    target = entry.target or (_cuda_target() if available else {"kind": "cuda"})
    return CudaGPU(entry.name, target, threads, why, entry.cores, {"kind": entry.kind}, entry.peak_gflops)
