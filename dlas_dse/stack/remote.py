"""Remote boards through the TVM RPC tracker: where the tracker is, what it has free, a session.

A board runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``; the tracker
(``python -m tvm.exec.rpc_tracker``) queues requests for a key across every board registered under
it. A trial holds one session (one board) while it measures latency and computes accuracy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from dlas_dse.files import ConfigError
from dlas_dse.lazy import lazy_import
from dlas_dse.stack.measurement import CpuTimes, set_runtime_threads

tvm = lazy_import("tvm")
rpc = lazy_import("tvm.rpc")

TRACKER_VARIABLE = "DLAS_RPC_TRACKER"
"""``host:port`` of the tracker, overriding every catalogue entry's ``tracker``."""
CONNECT_TIMEOUT_S = 3.0
COUNTERS_SOURCE = Path(__file__).with_name("cpu_counters.c")
"""The board-side CPU counters (a TVM FFI function in C), built for each board it is used on."""


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)``; raises ValueError saying what is expected."""
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9190), got {text!r}")
    return host, int(port)


def tracker_address(configured: str) -> tuple[str, int]:
    """The tracker to use: ``$DLAS_RPC_TRACKER`` if set, else the catalogue's ``configured``."""
    override = os.environ.get(TRACKER_VARIABLE)
    if not override:
        return parse_address(configured)
    try:
        return parse_address(override)
    except ValueError as error:
        raise ConfigError("environment", TRACKER_VARIABLE, f"{error}; set it to the tracker's host:port "
                          "or unset it to use the catalogue's tracker") from None


@dataclass
class TrackerStatus:
    """What a tracker said about one key (or why it could not be asked)."""

    address: str
    key: str
    reachable: bool
    boards: int = 0
    free: int = 0
    pending: int = 0
    error: str = ""

    @property
    def usable(self) -> bool:
        """Reachable, with at least one board under the key (free now or after the queue)."""
        return self.reachable and (self.boards > 0 or self.free > 0)

    def describe(self) -> str:
        """One line: the boards under the key and the queue, or why the tracker could not be asked."""
        if not self.reachable:
            return f"tracker {self.address} unreachable ({self.error})"
        return (f"tracker {self.address}: {self.boards} board(s) under key {self.key!r}, {self.free} free, "
                f"{self.pending} request(s) queued")


def tracker_status(host: str, port: int, key: str) -> TrackerStatus:
    """Ask the tracker at ``host:port`` how many boards are free under ``key`` (never blocks long)."""
    address = f"{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        summary = rpc.connect_tracker(host, port).summary()
    except (OSError, RuntimeError) as error:
        return TrackerStatus(address, key, False, error=f"{type(error).__name__}: {error}")
    queue = summary.get("queue_info", {}).get(key, {})
    boards = sum(1 for server in summary.get("server_info", []) if server.get("key", "").split(":", 1)[-1] == key)
    return TrackerStatus(address, key, True, boards, int(queue.get("free", 0)), int(queue.get("pending", 0)))


def how_to_start(device: str, key: str, host: str, port: int, target: dict) -> str:
    """Instructions to bring up a tracker and a board, and to run the same space here instead."""
    return (f"  1. on a machine the boards and this host can reach, start a tracker:\n"
            f"       python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port}\n"
            f"  2. on each board ({target.get('mtriple', target.get('kind'))}), with apache-tvm's runtime installed:\n"
            f"       TVM_NUM_THREADS=<its cores> python -m tvm.exec.rpc_server --tracker {host}:{port} --key {key}\n"
            f"  3. point dlas-dse at the tracker if it is not at {host}:{port}: {TRACKER_VARIABLE}=HOST:PORT\n"
            f"  or run the same space on this machine instead: add --hardware host-cpu\n"
            + ("  or on an emulated AArch64 board (QEMU; results real, latency not a board's; `make edge-board` "
               "builds it once): python -m dlas_dse board run -- <this command>\n"
               if str(target.get("mtriple", "")).startswith("aarch64") else "") +
            f"  (the catalogue entry {device!r} is in search_spaces/hardware.yaml)")


class NoBoard(RuntimeError):
    """No board is registered under the key: a request to the tracker would wait for one forever."""


class RemoteSession:
    """One board held through the tracker: upload libraries, load them, run on its CPU."""

    def __init__(self, host: str, port: int, key: str, threads: int, timeout_s: float):
        status = tracker_status(host, port, key)
        if not status.usable:  # the tracker would queue the request until a board registers: forever
            raise NoBoard(f"no board to run on: {status.describe()}")
        # one attempt: TVM's retries after a board died while the session opened would queue at the
        # tracker for a board that never comes back
        self.session = rpc.connect_tracker(host, port).request(key, priority=1, session_timeout=int(timeout_s),
                                                               max_retry=1)
        self.device, self.key = self.session.cpu(0), key
        self._loaded: dict[Path, tvm.runtime.Module] = {}
        self._counter: Callable | None = None
        self.use_threads(threads)

    def use_threads(self, threads: int) -> None:
        """Run the board's kernels on ``threads`` threads (checked)."""
        set_runtime_threads(self.session.get_function, threads, f"the board under key {self.key!r}",
                            "Start its RPC server with TVM_NUM_THREADS set to the board's core count "
                            "(TVM_NUM_THREADS=N python -m tvm.exec.rpc_server ...), or ask for at most "
                            "as many threads as it runs.")

    def load(self, library: Path) -> tvm.runtime.Module:
        """Upload ``library`` (a shared object built for the board) and load it there, once per
        session (a round trip to an emulated board is expensive)."""
        if library not in self._loaded:
            remote_name = f"{library.parent.name}-{library.name}"  # the build key keeps names apart
            self.session.upload(str(library), remote_name)
            self._loaded[library] = self.session.load_module(remote_name)
        return self._loaded[library]

    def cpu_counters(self, compiler: str | None) -> Callable[[], CpuTimes]:
        """The board's CPU counters, read on the board: :data:`COUNTERS_SOURCE` compiled with
        ``compiler`` (the board's cross compiler; None: this host's), uploaded and loaded there once
        per session."""
        if self._counter is None:
            with tempfile.TemporaryDirectory() as folder:
                library = Path(folder) / "dlas-cpu-counters.so"
                tvm.support.cc.create_shared(str(library), [str(COUNTERS_SOURCE)], options=["-O2"], cc=compiler)
                self._counter = self.load(library).get_function("dlas_cpu_counter", query_imports=True)
        counter = self._counter
        ticks_per_s = float(counter(3))

        def read() -> CpuTimes:
            busy, steal, own, clock_ns = (counter(which) for which in (0, 1, 2, 4))
            if min(busy, steal, own) < 0:
                raise RuntimeError("the board's /proc/stat or /proc/self/stat could not be read")
            return CpuTimes(busy / ticks_per_s, steal / ticks_per_s, own / ticks_per_s, clock_ns / 1e9)

        return read


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_in_own_session(command: list[str], output: Path | None = None,
                         environment: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` in a session (process group) of its own, its output to ``output``: a TVM
    tracker or RPC server runs its loop in a PopenWorker child, and killing only the parent would
    orphan that child, still serving (~1 GB each); :func:`stop_process_group` stops them all."""
    with open(output or os.devnull, "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=environment)


def stop_process_group(pid: int) -> None:
    """Kill the process group that :func:`start_in_own_session` started as ``pid`` (gone already: fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def start_tracker(port: int) -> subprocess.Popen:
    """A TVM RPC tracker on 127.0.0.1:``port``, in a session of its own."""
    return start_in_own_session([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                 "--port", str(port), "--port-end", str(port + 1)])


def server_arguments(tracker_port: int, server_port: int, key: str, fork: bool = True) -> list[str]:
    """``tvm.exec.rpc_server``'s arguments: listen on 127.0.0.1:``server_port``, register under ``key``;
    ``fork=False``: serve each session in a spawned process instead of a forked one."""
    return ["-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
            "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{tracker_port}", "--key", key,
            *([] if fork else ["--no-fork"])]


def wait_until_registered(port: int, key: str, processes: list[subprocess.Popen], timeout_s: float,
                          what: str) -> None:
    """Wait until a board is registered under ``key`` with the tracker at 127.0.0.1:``port``; raise
    RuntimeError if it takes longer than ``timeout_s`` or one of ``processes`` ends first."""
    deadline = time.monotonic() + timeout_s
    while not tracker_status("127.0.0.1", port, key).usable:
        ended = [p for p in processes if p.poll() is not None]
        if time.monotonic() > deadline or ended:
            why = (f"{' '.join(map(str, ended[0].args))[:200]} exited with code {ended[0].returncode}"
                   if ended else f"not within {timeout_s:g} s")
            raise RuntimeError(f"{what} did not register under {key!r} with the tracker at 127.0.0.1:{port}: {why}")
        time.sleep(0.5)


@contextlib.contextmanager
def loopback_tracker(key: str, log: Path | None = None, timeout_s: float = 120) -> Iterator[int]:
    """A tracker and one RPC server (this host as the board, every core usable) under ``key`` on
    127.0.0.1, for tests and benchmarks of the remote path; yields the tracker's port (the server's
    output goes to ``log``)."""
    port, server_port = free_port(), free_port()
    processes = [start_tracker(port)]
    try:
        processes.append(start_in_own_session([sys.executable, *server_arguments(port, server_port, key)], log,
                                              {**os.environ, "TVM_NUM_THREADS": str(os.cpu_count())}))
        wait_until_registered(port, key, processes, timeout_s, "the loopback RPC server")
        yield port
    finally:
        for process in processes:
            stop_process_group(process.pid)
            process.wait()
