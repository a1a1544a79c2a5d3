"""Which vector instruction sets a CPU target compiles for, and whether this CPU has them.

Several catalogue devices may run on this one CPU with different targets (``-mcpu`` native,
``haswell``: AVX2 without AVX-512 or VNNI, ...). A target is usable here only if this CPU executes
every vector instruction set the target lets LLVM emit; otherwise the first kernel dies with an
illegal instruction, so the device says "not reachable" instead.

LLVM's answers (this CPU's ``-mcpu``, a target's features) are kept per CPU and TVM version in
``~/.cache/dlas-dse/llvm-cpu.json``, so that planning a grid or listing devices need not import TVM.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path

from dlas_dse.lazy import lazy_import

tvm = lazy_import("tvm")


VECTOR_FAMILIES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "sve", "dotprod", "i8mm", "fullfp16")
"""LLVM feature-name stems of the vector instruction sets (the rest are scheduling hints such as
``slow-3ops-lea``, which never decide whether code runs)."""
CPUINFO_ALIASES = {"pni": "sse3", "asimd": "neon", "asimddp": "dotprod", "asimdhp": "fullfp16"}
"""/proc/cpuinfo flags whose LLVM feature has another name."""
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
LLVM_ANSWERS = Path.home() / ".cache" / "dlas-dse" / "llvm-cpu.json"


def _remembered(question: str, ask) -> object:
    """LLVM's answer to ``question`` on this CPU and TVM version: from :data:`LLVM_ANSWERS`, else
    ``ask()`` (which imports TVM), then kept there."""
    identity = json.dumps([cpuinfo_line("model name"), cpuinfo_line("flags", "Features"),
                           importlib.metadata.version("apache-tvm")])
    key = hashlib.sha256(f"{identity} {question}".encode()).hexdigest()[:32]
    try:
        answers = json.loads(LLVM_ANSWERS.read_text())
    except (OSError, ValueError):
        answers = {}
    if key not in answers:
        answers[key] = ask()
        try:
            LLVM_ANSWERS.parent.mkdir(parents=True, exist_ok=True)
            temporary = LLVM_ANSWERS.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(answers))
            temporary.replace(LLVM_ANSWERS)
        except OSError:
            pass  # a read-only home: ask again next time
    return answers[key]


def system_cpu() -> str:
    """LLVM's name of this CPU model (its ``-mcpu``, e.g. ``emeraldrapids``)."""
    return _remembered("system cpu", lambda: str(tvm.target.codegen.llvm_get_system_cpu()))


def vector_features(features: set[str]) -> set[str]:
    """The vector instruction-set features among LLVM ``features``, without hyphens (LLVM's
    ``amx-int8`` is the kernel's ``amx_int8``)."""
    return {name.replace("-", "") for name in features if name.startswith(VECTOR_FAMILIES)}


def target_features(target: dict) -> set[str]:
    """The vector instruction-set features LLVM may use for ``target`` (its ``-mcpu`` and ``-mattr``)."""
    features = _remembered(f"features {json.dumps(target, sort_keys=True)}", lambda: sorted(
        str(name) for name in tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target(target))))
    return vector_features(set(features))


@functools.cache
def host_features() -> frozenset[str]:
    """This CPU's vector instruction sets: what LLVM knows of the detected CPU model, together with
    the flags the kernel reports (a model LLVM does not know yet may have more than its guess)."""
    detected = {"kind": "llvm", "mcpu": system_cpu()}
    return frozenset(target_features(detected) | vector_features(_cpuinfo_flags()))


def cpuinfo_line(*names: str) -> str:
    """The value of the first /proc/cpuinfo line named one of ``names`` ('' if none)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next((line for line in cpuinfo if line.startswith(names)), "")
    except OSError:
        return ""
    return line.partition(":")[2].strip()


def _cpuinfo_flags() -> set[str]:
    """The kernel's CPU flags in LLVM's spelling (``avx512_vnni`` -> ``avx512vnni``, ``sse4_1`` -> ``sse4.1``)."""
    flags = cpuinfo_line("flags", "Features").split()
    return {CPUINFO_ALIASES.get(flag, flag.replace("sse4_", "sse4.").replace("_", "")) for flag in flags}


def target_architecture(target: dict) -> str:
    """The architecture ``target`` generates code for (its ``mtriple``, else this machine's)."""
    triple = target.get("mtriple")
    machine = triple.split("-", 1)[0] if triple else platform.machine()
    return ARCHITECTURES.get(machine.lower(), machine.lower())


def why_not_runnable_here(target: dict) -> str | None:
    """Why code built for the CPU ``target`` cannot run on this CPU, or None when it can."""
    architecture, here = target_architecture(target), target_architecture({})
    if architecture != here:
        return f"its target generates {architecture} code and this machine is {here}"
    missing = sorted(target_features(target) - host_features())
    if missing:
        return f"its target needs {', '.join(missing)}, which this CPU lacks"
    return None
