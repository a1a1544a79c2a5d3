"""The emulated board's root file system: Debian arm64 (bookworm, Python 3.11) with TVM's runtime.

Built once per machine into :func:`root_dir`: debootstrap's first stage on this host, its second
stage chrooted under QEMU, then the aarch64 wheels of apache-tvm and its dependencies, downloaded by
this host's pip for the board's platform and unpacked into ``/opt/tvm`` (no pip under emulation).
The build happens in a sibling folder renamed into place, and a marker written last: a second build
reuses the root; an interrupted one starts over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterator

from dlas_dse.board import emulation

ROOT_VARIABLE = "DLAS_BOARD_ROOT"
"""Where the board's root lives (default ``~/.cache/dlas-dse/edge-board``)."""
MIRROR_VARIABLE = "DLAS_BOARD_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
DEBIAN_PACKAGES = ["python3", "libstdc++6"]
PYTHON_PACKAGES = ["apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0", "numpy", "ml_dtypes",
                   "typing_extensions", "psutil", "cloudpickle", "tornado"]
"""TVM's runtime and what ``tvm.exec.rpc_server`` imports (its ``rpc`` extra)."""
SITE = "opt/tvm"
"""Where the wheels are unpacked inside the root (the board's PYTHONPATH)."""
MARKER = ".dlas-board-built"


def root_dir() -> Path:
    """The board's root: ``$DLAS_BOARD_ROOT``, else ``~/.cache/dlas-dse/edge-board``."""
    configured = os.environ.get(ROOT_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "dlas-dse" / "edge-board"


def is_built(root: Path) -> bool:
    """Whether ``root`` holds a finished build."""
    return (root / MARKER).is_file()


def board_environment(threads: int | None = None) -> dict[str, str]:
    """The environment of a process inside the root (nothing of this host's)."""
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                   "PYTHONPATH": f"/{SITE}", "PYTHONDONTWRITEBYTECODE": "1"}
    if threads:
        environment["TVM_NUM_THREADS"] = str(threads)
    return environment


def chroot_command(root: Path, command: list[str], threads: int | None = None) -> list[str]:
    """``command`` run inside ``root``, in a mount namespace of its own with /proc and /dev mounted
    (the mounts vanish with the namespace's last process: nothing to unmount)."""
    mounts = (f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
              f"mount -t tmpfs tmpfs {root}/tmp && ")
    environment = [f"{name}={value}" for name, value in board_environment(threads).items()]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts + 'exec "$@"', "sh",
            "chroot", str(root), "/usr/bin/env", "-i", *environment, *command]


def _run(command: list[str], log, what: str) -> None:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode:
        raise RuntimeError(f"{what} failed; see {log.name}")


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _say(message: str) -> None:
    print(f"[board] {message}", file=sys.stderr, flush=True)


def download_wheels(folder: Path, log) -> list[Path]:
    """The aarch64 CPython 3.11 wheels of :data:`PYTHON_PACKAGES`, fetched by this host's pip."""
    folder.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
          "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64",
          "--platform", "manylinux_2_17_aarch64", "--python-version", "3.11", "--implementation", "cp",
          "--abi", "cp311", "--abi", "abi3", "--abi", "none", "--dest", str(folder), *PYTHON_PACKAGES],
         log, "downloading the aarch64 wheels")
    return sorted(folder.glob("*.whl"))


def build(root: Path | None = None) -> Path:
    """Build the board's root at ``root`` (default :func:`root_dir`) unless it is built; returns it.
    Raises :class:`emulation.EmulationUnavailable` (nothing written) when QEMU cannot run here."""
    root = root or root_dir()
    if is_built(root):
        _say(f"reusing the board's root at {root}")
        return root
    emulation.check()
    debootstrap = emulation.debootstrap_binary()
    qemu = emulation.enable()  # before anything is written: unavailable emulation leaves no trace
    with _lock(root):
        if is_built(root):
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        log_path = root.with_name(root.name + "-build.log")
        started = time.monotonic()
        with open(log_path, "w") as log:
            mirror = os.environ.get(MIRROR_VARIABLE, DEFAULT_MIRROR)
            _say(f"building a Debian {SUITE} arm64 root at {root} (several minutes; log: {log_path})")
            _run([str(debootstrap), "--arch=arm64", "--foreign", "--variant=minbase",
                  f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(partial), mirror],
                 log, "debootstrap (first stage)")
            shutil.copy2(qemu, partial / "usr" / "bin" / "qemu-aarch64-static")
            _say("debootstrap second stage, under emulation")
            _run(["unshare", "--mount", "--propagation", "private", "chroot", str(partial),
                  "/debootstrap/debootstrap", "--second-stage"], log, "debootstrap (second stage, emulated)")
            _say("installing apache-tvm's aarch64 wheels")
            site = partial / SITE
            site.mkdir(parents=True)
            for wheel in download_wheels(root.with_name(root.name + "-wheels"), log):
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(site)
            for library in site.rglob("*.so*"):
                library.chmod(0o755)
            _run(chroot_command(partial, ["python3", "-c", "import tvm, tvm.exec.rpc_server; print(tvm.__version__)"]),
                 log, "importing TVM on the board")
            (partial / MARKER).write_text(f"built in {time.monotonic() - started:.0f} s\n")
        if root.exists():
            shutil.rmtree(root)
        partial.rename(root)
    _say(f"the board's root is ready at {root} ({time.monotonic() - started:.0f} s)")
    return root
