"""QEMU user-mode emulation of AArch64 through binfmt_misc: is it usable here, and make it so.

The kernel runs an aarch64 ELF through QEMU once ``qemu-aarch64`` is registered with binfmt_misc.
Registered with the ``F`` (fix-binary) flag, the kernel opens QEMU at registration, so programs in a
chroot without QEMU inside run too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

QEMU_VARIABLE = "DLAS_BOARD_QEMU"
"""Path of the ``qemu-aarch64-static`` binary (default: found on PATH)."""
BINFMT = Path("/proc/sys/fs/binfmt_misc")
ENTRY = "qemu-aarch64"
# The ELF header of an aarch64 executable (e_machine 0xb7) and which bytes of it to compare.
MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
REMEDY = ("install the Debian packages qemu-user-static, debootstrap and binfmt-support "
          "(`make edge-board` does it: apt-get install qemu-user-static debootstrap binfmt-support) "
          "and run as root, where binfmt_misc can be mounted")


class EmulationUnavailable(RuntimeError):
    """QEMU or binfmt_misc cannot run aarch64 programs here; the message says why and the remedy."""

    def __init__(self, problem: str):
        super().__init__(f"the emulated AArch64 board cannot run here: {problem}.\n  remedy: {REMEDY}")


def qemu_binary() -> Path:
    """The qemu-aarch64-static binary to use (``$DLAS_BOARD_QEMU``, else PATH); raises
    :class:`EmulationUnavailable` when there is none."""
    configured = os.environ.get(QEMU_VARIABLE)
    found = configured or shutil.which("qemu-aarch64-static")
    if not found:
        raise EmulationUnavailable("qemu-aarch64-static is not installed")
    path = Path(found)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise EmulationUnavailable(f"{path} (from ${QEMU_VARIABLE}) is not an executable file" if configured
                                   else f"{path} is not an executable file")
    return path


def debootstrap_binary() -> Path:
    """debootstrap, which builds the Debian root; raises :class:`EmulationUnavailable` without it."""
    found = shutil.which("debootstrap") or next((p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap")
                                                 if os.access(p, os.X_OK)), None)
    if not found:
        raise EmulationUnavailable("debootstrap is not installed")
    return Path(found)


def check() -> Path:
    """Raise :class:`EmulationUnavailable` unless QEMU is installed and this process may set up
    binfmt_misc (root); changes nothing. Returns QEMU's path."""
    qemu = qemu_binary()
    if os.geteuid() != 0:
        raise EmulationUnavailable("building and running the board's root needs root "
                                   "(chroot, mounts, binfmt_misc)")
    if not BINFMT.exists():
        raise EmulationUnavailable(f"{BINFMT} does not exist (a kernel without binfmt_misc)")
    return qemu


def _mounted() -> bool:
    return (BINFMT / "register").exists()


def _registered_interpreter() -> str | None:
    entry = BINFMT / ENTRY
    if not entry.exists():
        return None
    lines = entry.read_text().splitlines()
    if "enabled" not in lines[:1]:
        return None
    return next((line.split(None, 1)[1] for line in lines if line.startswith("interpreter ")), "")


def enable() -> Path:
    """Make the kernel run aarch64 programs through QEMU: mount binfmt_misc if needed and register
    ``qemu-aarch64`` (fix-binary) unless an enabled entry exists. Returns QEMU's path; raises
    :class:`EmulationUnavailable` with the reason when the kernel refuses."""
    qemu = check()
    try:
        if not _mounted():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                           check=True, capture_output=True, text=True)
        if _registered_interpreter() is None:
            if (BINFMT / ENTRY).exists():  # registered but disabled
                (BINFMT / ENTRY).write_text("1")
            else:
                (BINFMT / "register").write_text(f":{ENTRY}:M::{MAGIC}:{MASK}:{qemu}:F")
    except subprocess.CalledProcessError as error:
        raise EmulationUnavailable(f"binfmt_misc could not be mounted ({error.stderr.strip()})") from None
    except OSError as error:
        raise EmulationUnavailable(f"qemu-aarch64 could not be registered with binfmt_misc ({error})") from None
    return qemu
