"""The hardware catalogue: ``search_spaces/hardware.yaml`` (a project's own file wins over the
checkout's), read and validated when the hardware registry is first read, not at import.

Each catalogue device has a kind, an entry of :data:`DEVICE_KINDS` declared in its own module
(``local_cpu.py``, ``cuda.py``, ``rpc.py``): the function that creates a device of the kind, the
kind's own catalogue fields (as :class:`~dlas_dse.registry.Param`), and its traits:

- ``tvm_only``: only the tvm compiler deploys to it (a built-in rule says so);
- ``host_threads``: False where host threads do not change a trial (``hardware.threads`` is 0);
- ``required``: catalogue fields an entry of the kind must give;
- ``check``: ``check(raw) -> (field, why) | None``, a further check of an entry.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dlas_dse.files import ConfigError, project_root, read_yaml, unknown_field
from dlas_dse.registry import DEVICES, Param, PreflightError, Registry, Rule
from dlas_dse.stack.devices.base import HOST_CORES, Device

CATALOGUE = "hardware.yaml"
"""The catalogue's file name in ``search_spaces/``."""

DEVICE_KINDS = Registry("device kind", "kind", common={
    "description": Param(str, help="one line for `python -m dlas_dse devices`"),
    "target": Param(dict, help="the TVM target (JSON form); local-cpu and cuda detect theirs when it is left out"),
    "cores": Param(int, help="the device's CPU cores: hardware.threads may go from 1 to this"),
    "peak_gflops": Param(float, low=0.0, help="the device's float32 peak, where it is not measured here"),
})
"""Every device kind; an entry's function takes ``(CatalogueEntry, threads)`` and returns a :class:`Device`."""


@dataclass
class CatalogueEntry:
    """One device of the catalogue, validated."""

    name: str
    kind: str
    description: str
    target: dict | None
    cores: int
    details: dict
    """The kind's own fields."""
    peak_gflops: float | None


def catalogue_path() -> Path:
    """The project's ``search_spaces/hardware.yaml`` if it has one, else the checkout's."""
    own = project_root() / "search_spaces" / CATALOGUE
    return own if own.exists() else Path(__file__).resolve().parents[3] / "search_spaces" / CATALOGUE


def _entry(path: Path, name: str, raw: object) -> CatalogueEntry:
    """Validate one device of the catalogue at ``path``."""
    where = f"devices.{name}"
    kinds = DEVICE_KINDS.names()
    if not isinstance(raw, dict):
        raise ConfigError(path, where, f"expected a mapping with kind ({', '.join(kinds)}) and description")
    kind = raw.get("kind")
    if kind not in kinds:
        raise ConfigError(path, f"{where}.kind", f"unknown kind {kind!r}; allowed: {', '.join(kinds)}")
    own = DEVICE_KINDS.get(kind)
    fields = {**DEVICE_KINDS.common, **own.params}
    for key, value in raw.items():
        if key == "kind":
            continue
        if key not in fields:
            raise ConfigError(path, f"{where}.{key}", unknown_field(key, ["kind", *fields]) + f" (for kind {kind})")
        problem = fields[key].check(value)
        if problem:
            raise ConfigError(path, f"{where}.{key}", problem)
    for required in own.traits.get("required", ()):
        if required not in raw:
            raise ConfigError(path, f"{where}.{required}", f"required for kind {kind}")
    problem = own.traits.get("check", lambda raw: None)(raw)
    if problem:
        raise ConfigError(path, f"{where}.{problem[0]}", problem[1])
    cores = raw.get("cores", HOST_CORES)
    if cores < 1:
        raise ConfigError(path, f"{where}.cores", f"expected at least 1, got {cores}")
    return CatalogueEntry(name, kind, str(raw.get("description", "")), raw.get("target"), cores,
                          {key: raw[key] for key in own.params if key in raw}, raw.get("peak_gflops"))


def load_catalogue(path: Path) -> list[CatalogueEntry]:
    """Read and validate the hardware catalogue."""
    data = read_yaml(path)
    for key in data:
        if key not in ("description", "devices"):
            raise ConfigError(path, key, unknown_field(key, ["description", "devices"]))
    devices = data.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise ConfigError(path, "devices", "expected a mapping of device names to their entries")
    return [_entry(path, str(name), raw) for name, raw in devices.items()]


def _preflight(entry: CatalogueEntry):
    """Before a study starts: the device can be reached (tracker up, a board under the key; a GPU)."""

    def check(layers: dict) -> None:
        device = create_device(layers["hardware"])
        problems = []
        compiler = device.details.get("cross_compiler")
        if compiler and shutil.which(compiler) is None:
            problems.append(f"the cross compiler {compiler} is not installed; `make install` installs it "
                            "(Debian: apt-get install gcc-aarch64-linux-gnu)")
        usable, why = device.status()
        if not usable:
            problems.append(f"it cannot be reached: {why}")
        if problems:
            raise PreflightError(f"hardware.device {entry.name}: " + "; ".join(problems)
                                 + f".\n{device.how_to_reach()}")

    return check


def register_catalogue(registry: Registry, path: Path | None = None) -> None:
    """Make every device of the catalogue at ``path`` (default: :func:`catalogue_path`) an entry
    of the hardware ``registry``, with the rules its kind's traits imply."""
    entries = load_catalogue(path or catalogue_path())
    registry.common["threads"] = Param(int, default=0, low=0, high=max(entry.cores for entry in entries),
                                       help="runtime threads on the device (1 .. its cores; 0: all of them)")
    for entry in entries:
        kind = DEVICE_KINDS.get(entry.kind)
        traits = {"kind": entry.kind, "description": f"{entry.description} ({entry.kind})"}
        registry.register(entry.name, preflight=_preflight(entry), traits=traits)(
            lambda threads, entry=entry, create=kind.function: create(entry, threads or entry.cores))
        if kind.traits.get("tvm_only"):
            registry.rules.append(Rule(
                f"{entry.name}-runs-tvm-only", {"hardware.device": (entry.name,)}, {"software.compiler": ("tvm",)},
                f"{entry.name} is a {entry.kind} device: only the tvm compiler deploys to it"))
        if not kind.traits.get("host_threads", True):
            registry.rules.append(Rule(
                f"{entry.name}-has-no-host-threads", {"hardware.device": (entry.name,)}, {"hardware.threads": (0,)},
                f"{entry.name} is a GPU: host threads do not change its trials, so hardware.threads is 0 there"))
        else:
            registry.rules.append(Rule(
                f"threads-within-{entry.name}-cores", {"hardware.device": (entry.name,)},
                {"hardware.threads": tuple(range(entry.cores + 1))},
                f"{entry.name} has {entry.cores} cores: hardware.threads goes from 1 to {entry.cores} (0: all)"))


def create_device(params: dict) -> Device:
    """The device named by ``params["device"]`` with ``params["threads"]``."""
    return DEVICES.get(params["device"]).function(params.get("threads", 0))


DEVICES.load_on_first_read(register_catalogue)
