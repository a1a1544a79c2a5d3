"""Layer 6, hardware: the devices a trial can deploy to, with their compiler targets."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

import tvm

from dlas_dse.registry import DEVICES, Param

HOST_CORES = os.cpu_count() or 1


@dataclass
class Device:
    """A deployment target: TVM target JSON, runtime device, thread count, description."""

    name: str
    target: dict
    threads: int
    description: str
    details: dict = field(default_factory=dict)

    def tvm_target(self) -> tvm.target.Target:
        """The TVM target object."""
        return tvm.target.Target(self.target)

    def tvm_device(self) -> tvm.runtime.Device:
        """The TVM runtime device artifacts run on."""
        return tvm.device(self.target["kind"] if self.target["kind"] != "llvm" else "cpu", 0)

    def configure_runtime(self) -> None:
        """Apply this trial's thread count to TVM's runtime thread pool."""
        os.environ["TVM_NUM_THREADS"] = str(self.threads)
        tvm.get_global_func("runtime.config_threadpool")(1, self.threads)


def cpu_model() -> str:
    """The host CPU's model name, e.g. 'AMD EPYC 9R45'."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@DEVICES.register("host-cpu", threads=Param(int, default=HOST_CORES, low=1, high=HOST_CORES,
                                            help="runtime threads (1 .. this machine's cores)"))
def host_cpu(params: dict) -> Device:
    """This machine's CPU through LLVM with the detected -mcpu; threads are set at run time."""
    mcpu = str(tvm.target.codegen.llvm_get_system_cpu())
    target = {"kind": "llvm", "mcpu": mcpu, "num-cores": HOST_CORES}
    return Device("host-cpu", target, params["threads"], cpu_model(), {"mcpu": mcpu, "cores": HOST_CORES})


def create_device(params: dict) -> Device:
    """The device named by ``params["device"]`` with its parameters."""
    return DEVICES.get(params["device"]).function(params)
