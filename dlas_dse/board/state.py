"""Which emulated board runs now: a state file beside the board's root (standard library only).

``server.start`` writes it (the local tracker's port, the key, the process ids it started, the
server's log); ``server.stop`` removes it. A trial asks :func:`is_emulated_tracker` whether the
tracker it talks to is this machine's emulated board, so that its latency is marked emulated.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dlas_dse.board.root import root_dir


class BoardError(RuntimeError):
    """The emulated board cannot be started (not built, already running, failed to register)."""


@dataclass
class BoardState:
    """A running emulated board: its tracker on 127.0.0.1, key, started process ids, server log."""

    tracker_port: int
    key: str
    pids: list[int] = field(default_factory=list)
    log: str = ""

    @property
    def tracker(self) -> str:
        """``host:port`` of its tracker (what ``DLAS_RPC_TRACKER`` is set to)."""
        return f"127.0.0.1:{self.tracker_port}"

    def alive(self) -> list[int]:
        """The started processes still running."""
        return [pid for pid in self.pids if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def state_path(root: Path | None = None) -> Path:
    """The state file of the board whose root is ``root`` (default: :func:`root_dir`)."""
    root = root or root_dir()
    return root.with_name(root.name + ".state.json")


def read_state(root: Path | None = None) -> BoardState | None:
    """The board recorded as started (None when none is, or its file is unreadable)."""
    try:
        return BoardState(**json.loads(state_path(root).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(state: BoardState, root: Path | None = None) -> None:
    path = state_path(root)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state)))
    temporary.replace(path)


def clear_state(root: Path | None = None) -> None:
    state_path(root).unlink(missing_ok=True)


def is_emulated_tracker(host: str, port: int) -> bool:
    """Whether ``host:port`` is the tracker of this machine's running emulated board."""
    state = read_state()
    return (state is not None and port == state.tracker_port and host in ("127.0.0.1", "localhost")
            and bool(state.alive()))
