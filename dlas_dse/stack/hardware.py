"""Layer 6, hardware: the device catalogue and the devices a trial deploys to.

The catalogue (``search_spaces/hardware.yaml``; a project's own file wins over the checkout's)
names devices; each has a kind — ``local-cpu``, ``cuda`` or ``rpc`` — implemented here by one
:class:`Device` subclass. Several ``local-cpu`` devices may share this CPU with different targets
(instruction-set levels); one whose target needs what the CPU lacks is not reachable. Every catalogue device becomes an entry of the hardware registry, with
``threads`` (1 … its cores) and a built-in rule that keeps thread counts within them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import tvm

from dlas_dse.board.state import is_emulated_tracker
from dlas_dse.cache import ArtifactCache
from dlas_dse.files import ConfigError, project_root, read_yaml, unknown_field
from dlas_dse.registry import DEVICES, Param, PreflightError, Rule
from dlas_dse.stack.cpu_features import why_not_runnable_here
from dlas_dse.stack.measurement import CpuTimes, local_counters, set_runtime_threads
from dlas_dse.stack.peak import cpu_peak
from dlas_dse.stack.remote import RemoteSession, how_to_start, parse_address, tracker_address, tracker_status

HOST_CORES = os.cpu_count() or 1
CATALOGUE = "hardware.yaml"
"""The catalogue's file name in ``search_spaces/``."""


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


class CudaGPU(Device):
    """The first local NVIDIA GPU."""

    def configure_runtime(self) -> None:
        """Host threads do not matter to a GPU trial."""

    def load(self, library: Path) -> tuple[tvm.runtime.Module, tvm.runtime.Device]:
        return tvm.runtime.load_module(str(library)), tvm.cuda(0)

    def status(self) -> tuple[bool, str]:
        return cuda_status()


class RemoteBoard(Device):
    """A board behind the TVM RPC tracker: cross-compiled here, uploaded, run and timed there."""

    _session: RemoteSession | None = None

    @property
    def tracker(self) -> tuple[str, int]:
        """The tracker's ``(host, port)`` (``$DLAS_RPC_TRACKER`` overrides the catalogue)."""
        return tracker_address(self.details["tracker"])

    def configure_runtime(self) -> None:
        """Threads are applied on the board when its session opens (again here, once it is open)."""
        if self._session is not None:
            self._session.use_threads(self.threads)

    def export_library(self, executable: tvm.runtime.Executable, path: Path) -> None:
        compiler = self.details.get("cross_compiler")
        if not compiler:
            return super().export_library(executable, path)
        executable.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(compiler))

    def load(self, library: Path) -> tuple[tvm.runtime.Module, tvm.runtime.Device]:
        if self._session is None:
            host, port = self.tracker
            self._session = RemoteSession(host, port, self.details["key"], self.threads,
                                          self.details.get("session_timeout_s", 3600))
        return self._session.load(library), self._session.device

    @contextlib.contextmanager
    def explained_failures(self) -> Iterator[None]:
        """An error in the board's session (a board that died or lost its network mid-trial, a
        kernel failing there) names the board and what its tracker says of it now."""
        try:
            yield
        except Exception as error:
            if self._session is None:  # no session yet: the error says why none could be opened
                raise
            host, port = self.tracker
            now = tracker_status(host, port, self.details["key"]).describe()
            raise RuntimeError(f"the board under key {self.details['key']!r} failed mid-trial (now {now}): "
                               f"{type(error).__name__}: {error}") from error

    def cpu_counters(self) -> Callable[[], CpuTimes] | None:
        """The board's counters, read on the board (needs a loaded library: a session)."""
        if self._session is None:
            raise RuntimeError("the board's counters are read through its session: load a library first")
        return self._session.cpu_counters(self.details.get("cross_compiler"))

    def status(self) -> tuple[bool, str]:
        host, port = self.tracker
        status = tracker_status(host, port, self.details["key"])
        return status.usable, status.describe()

    @property
    def emulated(self) -> bool:
        """Emulated in the catalogue, or its tracker is this machine's emulated board's (``board run``)."""
        return bool(self.details.get("emulated")) or is_emulated_tracker(*self.tracker)

    def ran_on(self) -> str:
        host, port = self.tracker
        emulated = " (emulated AArch64 board: QEMU user-mode)" if self.emulated else ""
        return f"board {self.details['key']!r} via tracker {host}:{port}, target {self.target.get('mtriple')}{emulated}"


def cuda_status() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable here, and which one (or why not)."""
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


# --------------------------------------------------------------------------- the catalogue

@dataclass
class CatalogueEntry:
    """One device of the catalogue, validated."""

    name: str
    kind: str
    description: str
    target: dict | None
    cores: int
    details: dict
    peak_gflops: float | None


def _local_cpu(entry: CatalogueEntry, threads: int) -> Device:
    """This CPU, through the catalogue's target (e.g. an older ISA level) or the detected ``-mcpu``."""
    target = dict(entry.target or {"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu())})
    target.setdefault("num-cores", entry.cores)
    return LocalCPU(entry.name, target, threads, cpu_model(), entry.cores, {"kind": entry.kind}, entry.peak_gflops)


def _cuda(entry: CatalogueEntry, threads: int) -> Device:
    available, why = cuda_status()
    target = entry.target or (_cuda_target() if available else {"kind": "cuda"})
    return CudaGPU(entry.name, target, threads, why, entry.cores, {"kind": entry.kind}, entry.peak_gflops)


def _rpc(entry: CatalogueEntry, threads: int) -> Device:
    return RemoteBoard(entry.name, entry.target, threads, entry.description, entry.cores,
                       {"kind": entry.kind, **entry.details}, entry.peak_gflops)


KINDS: dict[str, tuple[Callable[[CatalogueEntry, int], Device], dict[str, type]]] = {
    "local-cpu": (_local_cpu, {}),
    "cuda": (_cuda, {}),
    "rpc": (_rpc, {"tracker": str, "key": str, "cross_compiler": str, "session_timeout_s": int, "emulated": bool}),
}
"""Device kinds: the function that creates a device of the kind, and the kind's own fields."""
COMMON_FIELDS = {"kind": str, "description": str, "target": dict, "cores": int, "peak_gflops": float}


def catalogue_path() -> Path:
    """The project's ``search_spaces/hardware.yaml`` if it has one, else the checkout's."""
    own = project_root() / "search_spaces" / CATALOGUE
    return own if own.exists() else Path(__file__).resolve().parents[2] / "search_spaces" / CATALOGUE


def _entry(path: Path, name: str, raw: object) -> CatalogueEntry:
    """Validate one device of the catalogue at ``path``."""
    where = f"devices.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(path, where, f"expected a mapping with kind ({', '.join(KINDS)}) and description")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(path, f"{where}.kind", f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
    fields = {**COMMON_FIELDS, **KINDS[kind][1]}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(path, f"{where}.{key}", unknown_field(key, list(fields)) + f" (for kind {kind})")
        expected = fields[key]
        if not isinstance(value, expected) and not (expected is float and isinstance(value, int)):
            raise ConfigError(path, f"{where}.{key}", f"expected {expected.__name__}, got {value!r}")
    if kind == "rpc":
        for required in ("target", "tracker"):
            if required not in raw:
                raise ConfigError(path, f"{where}.{required}", "required for kind rpc")
        try:
            parse_address(raw["tracker"])
        except ValueError as error:
            raise ConfigError(path, f"{where}.tracker", str(error)) from None
    cores = raw.get("cores", HOST_CORES)
    if cores < 1:
        raise ConfigError(path, f"{where}.cores", f"expected at least 1, got {cores}")
    details = {key: raw[key] for key in KINDS[kind][1] if key in raw}
    if kind == "rpc":
        details.setdefault("key", name)
    return CatalogueEntry(name, kind, str(raw.get("description", "")), raw.get("target"), cores, details,
                          raw.get("peak_gflops"))


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


def _preflight(entry: CatalogueEntry) -> Callable[[dict], None]:
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
        if not problems:
            return
        advice = "choose another device (python -m dlas_dse devices lists them)"
        if isinstance(device, RemoteBoard):
            host, port = device.tracker
            advice = "to reach a board:\n" + how_to_start(entry.name, device.details["key"], host, port, device.target)
            if device.details.get("emulated"):
                advice = ("start the emulated board (built once by `make edge-board`):\n"
                          "  python -m dlas_dse board run -- python -m dlas_dse optimize --study NAME\n"
                          "or `python -m dlas_dse board start` in another shell")
        raise PreflightError(f"hardware.device {entry.name}: " + "; ".join(problems) + f".\n{advice}")

    return check


def register_catalogue(path: Path) -> None:
    """Make every device of the catalogue at ``path`` an entry of the hardware registry."""
    entries = load_catalogue(path)
    DEVICES.common["threads"] = Param(int, default=0, low=0, high=max(entry.cores for entry in entries),
                                      help="runtime threads on the device (1 .. its cores; 0: all of them)")
    for entry in entries:
        DEVICES.register(entry.name, preflight=_preflight(entry))(
            lambda threads, entry=entry: KINDS[entry.kind][0](entry, threads or entry.cores))
        if entry.kind != "local-cpu":
            DEVICES.rules.append(Rule(
                f"{entry.name}-runs-tvm-only", {"hardware.device": (entry.name,)}, {"software.compiler": ("tvm",)},
                f"{entry.name} is a {entry.kind} device: only the tvm compiler deploys to it"))
        if entry.kind == "cuda":
            DEVICES.rules.append(Rule(
                f"{entry.name}-has-no-host-threads", {"hardware.device": (entry.name,)}, {"hardware.threads": (0,)},
                f"{entry.name} is a GPU: host threads do not change its trials, so hardware.threads is 0 there"))
        else:
            DEVICES.rules.append(Rule(
                f"threads-within-{entry.name}-cores", {"hardware.device": (entry.name,)},
                {"hardware.threads": tuple(range(entry.cores + 1))},
                f"{entry.name} has {entry.cores} cores: hardware.threads goes from 1 to {entry.cores} (0: all)"))


def create_device(params: dict) -> Device:
    """The device named by ``params["device"]`` with ``params["threads"]``."""
    return DEVICES.get(params["device"]).function(params.get("threads", 0))


register_catalogue(catalogue_path())
