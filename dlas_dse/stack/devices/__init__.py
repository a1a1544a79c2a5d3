"""Layer 6, hardware: the device catalogue and the devices a trial deploys to.

The catalogue (``search_spaces/hardware.yaml``, :mod:`.catalogue`) names devices; each has a kind
— ``local-cpu``, ``cuda`` or ``rpc`` — implemented by one module here (a :class:`Device` subclass
and its registration in :data:`DEVICE_KINDS`). Several ``local-cpu`` devices may share this CPU
with different targets (instruction-set levels); one whose target needs what the CPU lacks is not
reachable. A new kind is one new module here: every module of the package is imported. Every
catalogue device becomes an entry of the hardware registry, with ``threads`` (1 … its cores) and
built-in rules from its kind's traits.
"""

import importlib
import pkgutil

from dlas_dse.stack.devices.base import HOST_CORES, Device, cpu_model
from dlas_dse.stack.devices.catalogue import (DEVICE_KINDS, CatalogueEntry, catalogue_path, create_device,
                                              load_catalogue, register_catalogue)
from dlas_dse.stack.devices.cuda import CudaGPU, cuda_status
from dlas_dse.stack.devices.local_cpu import LocalCPU
from dlas_dse.stack.devices.rpc import RemoteBoard

for _module in pkgutil.iter_modules(__path__):  # every module here: a kind module registers its kind
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DEVICE_KINDS", "HOST_CORES", "CatalogueEntry", "CudaGPU", "Device", "LocalCPU", "RemoteBoard",
           "catalogue_path", "cpu_model", "create_device", "cuda_status", "load_catalogue", "register_catalogue"]
