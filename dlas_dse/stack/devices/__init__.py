"""Layer 6, hardware: the device catalogue and the devices a trial deploys to.

The catalogue (``search_spaces/hardware.yaml``, :mod:`.catalogue`) names devices; each has a kind
— ``local-cpu``, ``cuda`` or ``rpc`` — implemented by one module here (a :class:`Device` subclass
and its registration in :data:`DEVICE_KINDS`). Several ``local-cpu`` devices may share this CPU
with different targets (instruction-set levels); one whose target needs what the CPU lacks is not
reachable. A new kind is one new module here: every public module of the package is imported. Every
catalogue device becomes an entry of the hardware registry, with ``threads`` (1 … its cores) and
built-in rules from its kind's traits.
"""

from dlas_dse.registry import import_modules

import_modules(__name__, __path__, first=("local_cpu", "cuda", "rpc"))  # each module registers its kind

# re-exported after import_modules, so that kinds register in the order above
from dlas_dse.stack.devices.base import HOST_CORES, Device, cpu_model  # noqa: E402
from dlas_dse.stack.devices.catalogue import (DEVICE_KINDS, CatalogueEntry, catalogue_path,  # noqa: E402
                                              create_device, load_catalogue, register_catalogue)
from dlas_dse.stack.devices.cuda import CudaGPU, cuda_status  # noqa: E402
from dlas_dse.stack.devices.local_cpu import LocalCPU  # noqa: E402
from dlas_dse.stack.devices.rpc import RemoteBoard  # noqa: E402

__all__ = ["DEVICE_KINDS", "HOST_CORES", "CatalogueEntry", "CudaGPU", "Device", "LocalCPU", "RemoteBoard",
           "catalogue_path", "cpu_model", "create_device", "cuda_status", "load_catalogue", "register_catalogue"]
