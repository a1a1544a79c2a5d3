"""``python -m dlas_dse board build|start|stop|status|run -- COMMAND``: the emulated AArch64 board."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from dlas_dse.board import emulation, root
from dlas_dse.board.state import BoardError, read_state

DESCRIPTION = """\
An emulated AArch64 board for the edge workflow without hardware: a Debian arm64 root with
apache-tvm's aarch64 runtime, run under QEMU user-mode emulation, serving TVM RPC under the key
edge-arm behind a tracker on this host. Results are real AArch64 execution; latency is QEMU's,
not a board's: trials on it are marked emulated and kept out of latency findings.

  board build                   build the root once (3-6 min, ~640 MB; `make edge-board`); reused after
  board run -- COMMAND ...      start the board, run COMMAND with DLAS_RPC_TRACKER set to it, stop it
                                e.g. board run -- python -m dlas_dse optimize --study edge-arm
  board start [--port 9190]     start it and leave it running (`board stop` stops it)
  board status                  the root and the running board

Needs root (chroot, mounts, binfmt_misc) and the Debian packages qemu-user-static, debootstrap and
binfmt-support. The root lives in ~/.cache/dlas-dse/edge-board ($DLAS_BOARD_ROOT overrides it).
"""


def add_parser(commands) -> None:
    """Add ``board`` and its actions to the CLI's sub-commands."""
    parser = commands.add_parser("board", help="an emulated AArch64 board (QEMU) serving TVM RPC: build, run, stop",
                                 description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("build", help="build the board's Debian arm64 root with TVM (once; reused after)")
    start = actions.add_parser("start", help="start the tracker and the board's RPC server, and leave them running")
    start.add_argument("--port", type=int, default=9190, help="the tracker's port on 127.0.0.1 (default: 9190, "
                       "the edge-arm catalogue entry's)")
    run_action = actions.add_parser("run", help="start the board, run a command against it, stop the board")
    run_action.add_argument("board_command", nargs=argparse.REMAINDER, metavar="COMMAND", help="the command (after --)")
    for action in (start, run_action):
        action.add_argument("--threads", type=int, help="runtime threads of the board (default: this host's cores)")
    actions.add_parser("stop", help="stop a board started by `board start`")
    actions.add_parser("status", help="whether the root is built and the board runs")


def run(args: argparse.Namespace) -> int:
    """Run a ``board`` action; 2 when emulation is unavailable here or the board is not built."""
    actions = {"build": _build, "start": _start, "stop": _stop, "status": _status, "run": _run}
    try:
        return actions[args.action](args)
    except (emulation.EmulationUnavailable, BoardError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    try:
        root.build()
    except RuntimeError as error:
        if isinstance(error, emulation.EmulationUnavailable):
            raise
        print(f"error: building the board's root failed: {error}", file=sys.stderr)
        return 1
    return 0


def _start(args: argparse.Namespace) -> int:
    from dlas_dse.board import server

    state = server.start(port=args.port, threads=args.threads)
    print(f"emulated board {state.key!r} registered with the tracker at {state.tracker} "
          f"(processes {state.pids}; log {state.log})\n"
          f"  use it: DLAS_RPC_TRACKER={state.tracker} python -m dlas_dse optimize --study edge-arm\n"
          f"  stop it: python -m dlas_dse board stop")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from dlas_dse.board import server

    stopped = server.stop()
    print(f"stopped the emulated board (processes {stopped})" if stopped else "no emulated board was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    path = root.root_dir()
    print(f"root {path}: " + ("built" if root.is_built(path) else "not built (python -m dlas_dse board build)"))
    state = read_state()
    if state is None or not state.alive():
        print("board: not running")
        return 0
    from dlas_dse.stack.remote import tracker_status

    print(f"board: running, processes {state.alive()}, log {state.log}\n"
          f"  {tracker_status('127.0.0.1', state.tracker_port, state.key).describe()}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from dlas_dse.board import server
    from dlas_dse.stack.remote import TRACKER_VARIABLE

    command = args.board_command[1:] if args.board_command[:1] == ["--"] else args.board_command
    if not command:
        print("error: board run needs a command after --, e.g. board run -- python -m dlas_dse optimize "
              "--study edge-arm", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))  # stop the board on `kill` too
    with server.running(threads=args.threads) as state:
        print(f"emulated board {state.key!r} ready behind the tracker at {state.tracker}", file=sys.stderr, flush=True)
        try:
            return subprocess.run(command, env={**os.environ, TRACKER_VARIABLE: state.tracker}).returncode
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 127
