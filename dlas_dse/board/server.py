"""Start and stop the emulated board: a TVM tracker on this host and the board's RPC server,
chrooted in the Debian arm64 root under QEMU, registered with it under a key.

Each process starts in a session of its own and is stopped by killing its process group (its id
is recorded in the state file, so ``board stop`` from another shell stops exactly what ``board
start`` started). The server's mounts live in its own mount namespace and vanish with it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from dlas_dse.board import emulation
from dlas_dse.board.root import chroot_command, is_built, root_dir
from dlas_dse.board.state import BoardError, BoardState, clear_state, read_state, write_state
from dlas_dse.stack.remote import (free_port, server_arguments, start_in_own_session, start_tracker,
                                   stop_process_group, wait_until_registered)

KEY = "edge-arm"
"""The key the emulated board registers under: the edge-arm study's."""
START_TIMEOUT_S = 600.0
"""Python and TVM start slowly under emulation (about a minute on a busy 2-core host)."""


def start(root: Path | None = None, key: str = KEY, port: int | None = None, threads: int | None = None,
          timeout_s: float = START_TIMEOUT_S) -> BoardState:
    """Start the tracker (127.0.0.1:``port``, default a free one) and the board's RPC server under
    ``key`` with ``threads`` runtime threads (default: this host's cores); returns once the board is
    registered. Raises :class:`emulation.EmulationUnavailable` or :class:`BoardError`."""
    root = root or root_dir()
    emulation.check()
    if not is_built(root):
        raise BoardError(f"the board's root is not built at {root}: run `make edge-board` "
                         "(or `python -m dlas_dse board build`) first")
    running = read_state(root)
    if running is not None and running.alive():
        raise BoardError(f"an emulated board already runs (tracker {running.tracker}, processes "
                         f"{running.alive()}): `python -m dlas_dse board stop` stops it")
    emulation.enable()
    port = port or free_port()
    log = root.with_name(root.name + ".server.log")
    state = BoardState(port, key, [], str(log))
    processes = [start_tracker(port)]
    state.pids.append(processes[0].pid)
    write_state(state, root)
    try:
        # the server forks a process per session; under QEMU user-mode emulation a fork of the
        # multi-threaded server sometimes hangs before serving (seen in CI), so it spawns instead
        server = chroot_command(root, ["python3", *server_arguments(port, free_port(), key, fork=False)],
                                threads or os.cpu_count() or 1)
        processes.append(start_in_own_session(server, log))
        state.pids.append(processes[1].pid)
        write_state(state, root)
        wait_until_registered(port, key, processes, timeout_s, f"the emulated board (log: {log})")
    except BaseException as error:
        stop(state, root)
        if isinstance(error, RuntimeError):  # the tracker's port taken, the server failing in the root
            raise BoardError(f"{error} (is port {port} free?)") from None
        raise
    return state


def stop(state: BoardState | None = None, root: Path | None = None, timeout_s: float = 10.0) -> list[int]:
    """Stop the board's processes (``state``, default the recorded one) and forget it; returns the
    process ids that were still running."""
    state = state or read_state(root)
    if state is None:
        return []
    running = state.alive()
    for pid in state.pids:
        stop_process_group(pid)
    deadline = time.monotonic() + timeout_s
    while state.alive() and time.monotonic() < deadline:
        for pid in state.pids:  # reap them where they are this process's children
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    clear_state(root)
    return running


@contextlib.contextmanager
def running(root: Path | None = None, key: str = KEY, threads: int | None = None) -> Iterator[BoardState]:
    """The emulated board, running for the ``with`` block and stopped after it (even on error)."""
    state = start(root, key, threads=threads)
    try:
        yield state
    finally:
        stop(state, root)
