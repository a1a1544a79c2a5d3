"""int8 convolutions on dot-product instructions: every instruction this CPU can run computes
every distinct dense convolution of the seven models bit for bit as integer arithmetic does, the
instruction is really in the code, and an AArch64 build with ``+dotprod`` uses ``sdot``."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from dlas_dse.registry import MODELS
from dlas_dse.stack.algorithms import apply_algorithm, build_pipeline, convolutions
from dlas_dse.stack.algorithms.conv import ConvSpec, conv_module, spec_from_call
from dlas_dse.stack.algorithms.int8_dot import DOT_PRODUCTS, dot_product
from dlas_dse.stack.compilers import to_relax
from dlas_dse.stack.cpu_features import host_features

X86_TARGETS = {  # an -mcpu whose best int8 instruction is each x86 form
    "vnni": "znver4", "avx512_pmaddwd": "skylake-avx512", "avx2_pmaddwd": "haswell"}
INSTRUCTIONS = {"vnni": "vpdpbusd", "avx512_pmaddwd": "vpmaddwd", "avx2_pmaddwd": "vpmaddwd", "neon_sdot": "sdot"}
AARCH64_DOTPROD = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]}


def runnable_here() -> list[str]:
    """The x86 forms whose instructions this CPU has."""
    return [name for features, dot, _ in DOT_PRODUCTS if (name := dot.name) in X86_TARGETS
            and set(features) <= host_features()]


@pytest.fixture(scope="module")
def int8_shapes() -> list[ConvSpec]:
    """Every distinct convolution of the seven models at 32x32 (CIFAR stems), as int8 → int32."""
    found: dict[ConvSpec, None] = {}
    for name in MODELS.names():
        mod = to_relax(MODELS.get(name).function(10, 32).eval(), (1, 3, 32, 32))
        for call in convolutions(mod):
            spec = spec_from_call(call, "float32")
            found[ConvSpec(**{**spec.__dict__, "data_dtype": "int8", "weight_dtype": "int8", "out_dtype": "int32"})] = None
    return list(found)


def _target(mcpu: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})


def _cases() -> list[tuple[str, str]]:
    """direct on every form this CPU runs; nchwc (blocks of the instruction's lanes) on the best."""
    forms = runnable_here()
    return [(form, "direct") for form in forms] + [(form, "nchwc") for form in forms[:1]]


@pytest.mark.parametrize("form,conv", _cases())
def test_every_model_convolution_is_exact_on_each_instruction_this_cpu_has(int8_shapes, form, conv):
    target = _target(X86_TARGETS[form])
    dot = dot_product(target)
    assert dot.name == form
    rng = np.random.default_rng(0)
    weights = [rng.integers(-127, 128, (s.out_channels, s.in_per_group, s.kernel_h, s.kernel_w)).astype(np.int8)
               for s in int8_shapes]
    mod, record = apply_algorithm(conv_module(int8_shapes, weights), {"conv": conv}, target)
    dense = sum(spec.groups == 1 for spec in int8_shapes)
    used = record["convolutions_by_algorithm"]
    if conv == "direct":
        assert used == {f"direct_{form}": dense, "direct": len(int8_shapes) - dense}
    else:  # each convolution alone: blocked where the lanes divide its channels, else NCHW direct
        blocked = [s for s in int8_shapes if s.in_channels % dot.lanes == 0 and s.out_channels % dot.lanes == 0
                   and (s.groups == 1 or s.in_per_group == s.out_per_group == 1)]
        assert used[f"nchwc_{form}"] == sum(s.groups == 1 for s in blocked) > 20
        assert used["nchwc"] == len(blocked) - used[f"nchwc_{form}"]
        assert used[f"direct_{form}"] + used.get("direct", 0) == len(int8_shapes) - len(blocked)
    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=build_pipeline(target)), tvm.cpu())
    wrong = []
    for index, (spec, weight) in enumerate(zip(int8_shapes, weights)):
        data = rng.integers(-128, 128, (spec.batch, spec.in_channels, spec.height, spec.width)).astype(np.int8)
        top, left, bottom, right = spec.padding
        expected = F.conv2d(F.pad(torch.from_numpy(data).double(), (left, right, top, bottom)),
                            torch.from_numpy(weight).double(), None, spec.stride, 0, spec.dilation, spec.groups)
        if not np.array_equal(vm[f"conv{index}"](tvm.runtime.tensor(data)).numpy(), expected.numpy().astype(np.int32)):
            wrong.append(spec.describe())
    assert not wrong, f"{len(wrong)} of {len(int8_shapes)} int8 convolutions differ: {wrong}"


def _assembly(target: tvm.target.Target, tmp_path, objdump: str = "objdump", conv: str = "direct") -> str:
    spec = ConvSpec(1, 64, 8, 8, 64, 3, 3, (1, 1), (1, 1, 1, 1), data_dtype="int8", weight_dtype="int8",
                    out_dtype="int32")
    weight = np.ones((64, 64, 3, 3), np.int8)
    mod, _ = apply_algorithm(conv_module([spec], [weight]), {"conv": conv}, target)
    library = tmp_path / f"{conv}.so"
    executable = tvm.compile(mod, target, relax_pipeline=build_pipeline(target))
    if target.attrs.get("mtriple"):
        executable.export_library(str(library), cc="aarch64-linux-gnu-gcc")
    else:
        executable.export_library(str(library))
    return subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("conv", ["direct", "nchwc"])
@pytest.mark.parametrize("form", sorted(X86_TARGETS))
def test_each_x86_form_compiles_to_its_instruction(form, conv, tmp_path):
    assembly = _assembly(_target(X86_TARGETS[form]), tmp_path, conv=conv)
    assert re.search(rf"\b{INSTRUCTIONS[form]}\b", assembly)
    if form != "vnni":
        assert "vpdpbusd" not in assembly  # a CPU without VNNI never gets it


def test_aarch64_with_dotprod_compiles_to_sdot_and_without_it_keeps_the_loop_nest(tmp_path):
    objdump = "aarch64-linux-gnu-objdump"
    assert re.search(r"\bsdot\b", _assembly(tvm.target.Target(AARCH64_DOTPROD), tmp_path, objdump))
    plain = tvm.target.Target({**AARCH64_DOTPROD, "mattr": ["+neon"]})
    assert dot_product(plain) is None
    assert not re.search(r"\bsdot\b", _assembly(plain, tmp_path, objdump))
