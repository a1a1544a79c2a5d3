"""Which vector instruction sets a CPU target compiles for, and whether this CPU has them.

Several catalogue devices may run on this one CPU with different targets (``-mcpu`` native,
``haswell``: AVX2 without AVX-512 or VNNI, ...). A target is usable here only if this CPU executes
every vector instruction set the target lets LLVM emit; otherwise the first kernel dies with an
illegal instruction, so the device says "not reachable" instead.
"""

from __future__ import annotations

import functools
import platform

import tvm

VECTOR_FAMILIES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "sve", "dotprod", "i8mm", "fullfp16")
"""LLVM feature-name stems of the vector instruction sets (the rest are scheduling hints such as
``slow-3ops-lea``, which never decide whether code runs)."""
CPUINFO_ALIASES = {"pni": "sse3", "asimd": "neon", "asimddp": "dotprod", "asimdhp": "fullfp16"}
"""/proc/cpuinfo flags whose LLVM feature has another name."""
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def vector_features(features: set[str]) -> set[str]:
    """The vector instruction-set features among LLVM ``features``, without hyphens (LLVM's
    ``amx-int8`` is the kernel's ``amx_int8``)."""
    return {name.replace("-", "") for name in features if name.startswith(VECTOR_FAMILIES)}


def target_features(target: dict) -> set[str]:
    """The vector instruction-set features LLVM may use for ``target`` (its ``-mcpu`` and ``-mattr``)."""
    return vector_features(set(tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target(target))))


@functools.cache
def host_features() -> frozenset[str]:
    """This CPU's vector instruction sets: what LLVM knows of the detected CPU model, together with
    the flags the kernel reports (a model LLVM does not know yet may have more than its guess)."""
    detected = {"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu())}
    return frozenset(target_features(detected) | vector_features(_cpuinfo_flags()))


def _cpuinfo_flags() -> set[str]:
    """The kernel's CPU flags in LLVM's spelling (``avx512_vnni`` -> ``avx512vnni``, ``sse4_1`` -> ``sse4.1``)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        return set()
    flags = line.partition(":")[2].split()
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
