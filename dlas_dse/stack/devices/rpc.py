"""Device kind ``rpc``: a board behind the TVM RPC tracker, cross-compiled here, uploaded, run and
timed there (only the tvm compiler deploys to it)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from dlas_dse.board.state import is_emulated_tracker
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import Param
from dlas_dse.stack.devices.base import Device
from dlas_dse.stack.devices.catalogue import DEVICE_KINDS, CatalogueEntry
from dlas_dse.stack.measurement import CpuTimes
from dlas_dse.stack.remote import NoBoard, RemoteSession, how_to_start, parse_address, tracker_address, tracker_status

tvm = lazy_import("tvm")


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
            if isinstance(error, NoBoard):  # nothing to run on: the error says so and how to start one
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

    def how_to_reach(self) -> str:
        if self.details.get("emulated"):
            return ("start the emulated board (built once by `make edge-board`):\n"
                    "  python -m dlas_dse board run -- python -m dlas_dse optimize --study NAME\n"
                    "or `python -m dlas_dse board start` in another shell")
        host, port = self.tracker
        return "to reach a board:\n" + how_to_start(self.name, self.details["key"], host, port, self.target)

    def ran_on(self) -> str:
        host, port = self.tracker
        emulated = " (emulated AArch64 board: QEMU user-mode)" if self.emulated else ""
        return f"board {self.details['key']!r} via tracker {host}:{port}, target {self.target.get('mtriple')}{emulated}"


def _tracker_problem(raw: dict) -> tuple[str, str] | None:
    """The catalogue entry's field that is wrong, and why (its tracker must be ``host:port``)."""
    try:
        parse_address(raw["tracker"])
    except ValueError as error:
        return "tracker", str(error)
    return None


@DEVICE_KINDS.register(
    "rpc", traits={"tvm_only": True, "required": ("target", "tracker"), "check": _tracker_problem},
    tracker=Param(str, help="host:port of the tracker (DLAS_RPC_TRACKER=host:port overrides it)"),
    key=Param(str, help="the key the board's RPC server registered under (default: the device's name)"),
    cross_compiler=Param(str, help="the C compiler that links the shared library for the board"),
    session_timeout_s=Param(int, low=1, help="seconds a board session may be held"),
    emulated=Param(bool, help="a board run under emulation (QEMU): real results, not a board's latency"))
def rpc(entry: CatalogueEntry, threads: int) -> Device:
    """The board under the entry's key (default: the device's name) at its tracker."""
    return RemoteBoard(entry.name, entry.target, threads, entry.description, entry.cores,
                       {"kind": entry.kind, "key": entry.name, **entry.details}, entry.peak_gflops)
