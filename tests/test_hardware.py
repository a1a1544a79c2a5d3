"""Layer 6: the hardware catalogue, cross-compiling for edge-arm, the unreachable-tracker error,
the devices command and the --hardware override."""

from __future__ import annotations

import collections
import glob
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import tvm
from tvm.support import nvcc

from dlas_dse.cache import ArtifactCache
from dlas_dse.config import load_study
from dlas_dse.files import ConfigError
from dlas_dse.stack.algorithms import apply_algorithm, build_pipeline
from dlas_dse.stack.algorithms.schedule import vector_bits
from dlas_dse.stack.compilers import BuildRequest, compile_model, fold_batchnorm, to_relax
from dlas_dse.stack.compression import calibrate_input_scales
from dlas_dse.stack.cpu_features import host_features
from dlas_dse.stack.devices import create_device, cuda_status, load_catalogue
from dlas_dse.stack.compression import precisions
from dlas_dse.stack.remote import free_port

REPOSITORY = Path(__file__).resolve().parent.parent
AARCH64 = 183  # ELF e_machine of AArch64
EM_CUDA = 190  # ELF e_machine of NVIDIA CUDA cubins
H200 = {"kind": "cuda", "arch": "sm_90", "max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
        "thread_warp_size": 32}
UNTUNED = {"compiler": "tvm", "tuning": "untuned", "trials_per_task": 1, "max_trials": 0, "tuning_timeout_s": 0.0}


@pytest.mark.parametrize("entry, field, words", [
    ("board: {kind: fpga, description: x}", "devices.board.kind", ["unknown kind 'fpga'", "local-cpu, cuda, rpc"]),
    ("board: {kind: rpc, target: {kind: llvm}}", "devices.board.tracker", ["required for kind rpc"]),
    ("board: {kind: rpc, target: {kind: llvm}, tracker: nowhere}", "devices.board.tracker", ["host:port"]),
    ("board: {kind: local-cpu, tracker: '1.2.3.4:9190'}", "devices.board.tracker",
     ["unknown field 'tracker'", "for kind local-cpu"]),
    ("board: {kind: rpc, target: {kind: llvm}, tracker: 'a:1', cores: 0}", "devices.board.cores", ["at least 1"]),
])
def test_bad_catalogue_names_file_field_and_allowed_values(tmp_path, entry, field, words):
    path = tmp_path / "hardware.yaml"
    path.write_text(f"devices:\n  {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    assert caught.value.file == str(path) and caught.value.field == field
    for word in words:
        assert word in str(caught.value)


def test_threads_beyond_a_devices_cores_are_excluded_by_a_rule(project):
    project.write("search_spaces", "hardware", """\
        devices:
          host-cpu: {kind: local-cpu}
          board: {kind: rpc, target: {kind: llvm}, tracker: '127.0.0.1:9', cores: 2}
          big: {kind: rpc, target: {kind: llvm}, tracker: '127.0.0.1:9', cores: 8}
        """)
    space = textwrap.dedent("""\
        model: {architecture: resnet18}
        hardware: {device: board, threads: 3}
        """)
    project.write("search_spaces", "s", space)
    project.write("studies", "s", "space: s\n")
    result = project.run("optimize", "--study", "s")
    assert result.returncode == 2
    assert "constraints" in result.stderr and "threads-within-board-cores" in result.stderr
    assert "board has 2 cores" in result.stderr


def test_unreachable_tracker_stops_before_any_work_and_says_what_to_do(project, tmp_path):
    port = free_port()  # nothing listens there
    env = {**project.env(), "DLAS_RPC_TRACKER": f"127.0.0.1:{port}", "DLAS_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(project.command("optimize", "--study", str(REPOSITORY / "studies" / "edge-arm.yaml")),
                            cwd=project.root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    message = result.stderr
    for words in (f"tracker 127.0.0.1:{port} unreachable", "python -m tvm.exec.rpc_tracker",
                  f"python -m tvm.exec.rpc_server --tracker 127.0.0.1:{port} --key edge-arm",
                  "DLAS_RPC_TRACKER", "--hardware host-cpu"):
        assert words in message
    assert not (tmp_path / "cache").exists()  # no dataset, training or build was started


THREAD_COUNTS = textwrap.dedent("""\
    import sys, tvm
    from dlas_dse.stack.devices import create_device
    for threads in map(int, sys.argv[1:]):
        create_device({"device": "host-cpu", "threads": threads}).configure_runtime()
        print(tvm.get_global_func("runtime.NumThreads")())
    """)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_the_runtime_runs_the_threads_asked_for_or_the_device_says_why():
    """TVM sizes its thread pool once per process and silently runs fewer threads beyond that size:
    a device asked for more must fail, not measure fewer threads than the trial records."""
    def run(*threads):
        return subprocess.run([sys.executable, "-c", THREAD_COUNTS, *map(str, threads)], capture_output=True,
                              text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"})
    fewer_later = run(2, 1, 2)
    assert fewer_later.returncode == 0, fewer_later.stderr
    assert fewer_later.stdout.split() == ["2", "1", "2"]
    more_later = run(1, 2)
    assert more_later.returncode == 1 and more_later.stdout.split() == ["1"]
    assert "this process runs TVM kernels on 1 thread(s), not the 2 asked for" in more_later.stderr


def test_hardware_override_runs_the_edge_space_on_this_machine(monkeypatch):
    monkeypatch.chdir(REPOSITORY)
    config = load_study("edge-arm", {"hardware.device": "host-cpu"})
    assert config.space.parameter("hardware.device").values == ("host-cpu",)
    with pytest.raises(ConfigError) as caught:
        load_study("edge-arm", {"hardware.device": "tpu"})
    assert "unknown hardware device 'tpu'" in str(caught.value) and "host-cpu" in str(caught.value)


def test_devices_lists_the_catalogue_and_what_is_reachable(project):
    project.write("search_spaces", "hardware", f"""\
        devices:
          host-cpu: {{kind: local-cpu, description: this CPU}}
          board: {{kind: rpc, target: {{kind: llvm}}, tracker: '127.0.0.1:{free_port()}', key: k1}}
        """)
    result = project.run("devices", "--measure-peak")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    host = next(i for i, line in enumerate(lines) if line.strip().startswith("host-cpu"))
    assert "ready" in lines[host] and "GFLOP/s" in lines[host + 2]
    board = next(line for line in lines if line.strip().startswith("board"))
    assert "NOT REACHABLE" in board and "unreachable" in board


def test_cross_compiling_for_edge_arm_gives_an_aarch64_shared_object(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 4)).eval()
    device = create_device({"device": "edge-arm", "threads": 1})
    cache = ArtifactCache(tmp_path)
    request = BuildRequest(model=model, model_key={"test": "cross"}, image_shape=(3, 8, 8), batch_size=1,
                           algorithm={"conv": "gemm", "layout": "NCHW", "format": "dense"}, software=UNTUNED,
                           device=device)
    build = compile_model(request, cache)  # built here; nothing is loaded until it runs on the board
    header = (cache.path("build", build.key) / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64


@pytest.mark.parametrize("target, bits", [
    ({"kind": "llvm", "mcpu": "znver3"}, 256),  # AVX2 (TVM's own query says 512 for every x86 CPU)
    ({"kind": "llvm", "mcpu": "skylake-avx512"}, 512),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, 128),
])
def test_default_schedules_use_the_cpus_real_vector_width(target, bits):
    assert vector_bits(tvm.target.Target(target)) == bits


def _vector_registers(library: Path) -> collections.Counter:
    """How often the disassembly of ``library`` names xmm, ymm and zmm registers."""
    assembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                              text=True, check=True).stdout
    return collections.Counter(re.findall(r"%([xyz]mm)\d+", assembly))


def test_one_cpu_held_to_two_instruction_sets_runs_different_code_and_both_match_pytorch(tmp_path):
    """host-cpu compiles for everything this CPU has, x86-avx2 for AVX2 only: the same model gives
    different machine code (no 512-bit zmm registers for x86-avx2), and both builds run here,
    match PyTorch and are timed."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(32 * 16 * 16, 10)).eval()
    images = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        expected = model(images).numpy()
    cache, registers = ArtifactCache(tmp_path), {}
    for name in ("host-cpu", "x86-avx2"):
        device = create_device({"device": name, "threads": 1})
        assert device.status()[0], device.status()
        request = BuildRequest(model=model, model_key={"test": "isa"}, image_shape=(16, 16, 16), batch_size=2,
                               algorithm={"conv": "direct", "layout": "NCHW", "format": "dense"}, software=UNTUNED,
                               device=device)
        build = compile_model(request, cache)
        assert abs(build.executable.run(images.numpy()) - expected).max() < 1e-4 * max(1.0, abs(expected).max())
        assert min(build.executable.time_runs(images.numpy(), 3)) > 0
        registers[name] = _vector_registers(cache.path("build", build.key) / "model.so")
    assert registers["x86-avx2"]["ymm"] > 0 and registers["x86-avx2"]["zmm"] == 0
    if "avx512f" in host_features():
        assert registers["host-cpu"]["zmm"] > 0
    assert registers["host-cpu"] != registers["x86-avx2"]


def test_a_target_needing_instructions_this_cpu_lacks_is_not_reachable(project):
    lacking = next(feature for feature in ("sse4a", "amx-fp16", "avx512vp2intersect")
                   if feature.replace("-", "") not in host_features())
    project.write("search_spaces", "hardware", f"""\
        devices:
          host-cpu: {{kind: local-cpu}}
          future-cpu: {{kind: local-cpu, target: {{kind: llvm, mcpu: x86-64, mattr: ["+{lacking}"]}}}}
          other-arch: {{kind: local-cpu, target: {{kind: llvm, mtriple: aarch64-linux-gnu}}}}
        """)
    listing = project.run("devices")
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert "ready" in lines["host-cpu"]
    assert "NOT REACHABLE" in lines["future-cpu"] and f"needs {lacking.replace('-', '')}" in lines["future-cpu"]
    assert "NOT REACHABLE" in lines["other-arch"] and "aarch64 code" in lines["other-arch"]
    name = project.tiny()
    result = project.run("optimize", "--study", name, "--hardware", "future-cpu")
    assert result.returncode == 2, result.stderr
    assert "hardware.device future-cpu" in result.stderr and "this CPU lacks" in result.stderr
    assert not (project.root / "results").exists()


def _small_convnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 8 * 8, 4)).eval()


def _cuda_toolkit() -> str | None:
    """A CUDA toolkit with the headers NVRTC compiles TVM's kernels against ($CUDA_PATH, else
    /usr/local/cuda*), where the CUDA Python bindings that hold NVRTC are installed too."""
    if importlib.util.find_spec("cuda.bindings") is None:
        return None
    candidates = [os.environ.get("CUDA_PATH", ""), *sorted(glob.glob("/usr/local/cuda*"), reverse=True)]
    return next((path for path in candidates if path and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))),
                None)


def _cuda_module(module: tvm.runtime.Module) -> tvm.runtime.Module:
    """The CUDA kernels a compiled Relax executable imports."""
    if module.kind == "cuda":
        return module
    return next(found for found in map(_cuda_module, module.imports) if found is not None)


@pytest.mark.skipif(_cuda_toolkit() is None, reason="compiling CUDA kernels needs a CUDA toolkit and cuda-bindings")
@pytest.mark.parametrize("conv, layout, precision", [
    ("direct", "NCHW", "float32"), ("gemm", "NHWC", "float32"), ("winograd", "NCHW", "float32"),
    ("spatial_pack", "NCHW", "float32"), ("direct", "NCHW", "float16"), ("direct", "NCHW", "int8")])
def test_cuda_kernels_compile_for_an_h200_without_one(monkeypatch, conv, layout, precision):
    """Every kernel gets a dlight schedule (Matmul fails on winograd's product, the next rule takes
    it), and NVRTC — what TVM's CUDA loader JITs with on the GPU — turns them into an sm_90 cubin."""
    monkeypatch.setenv("CUDA_PATH", _cuda_toolkit())
    model = fold_batchnorm(_small_convnet())
    calibration = calibrate_input_scales(model, torch.randn(8, 3, 8, 8)) if precision == "int8" else {}
    mod, _ = precisions.precision(precision).lower(to_relax(model, (2, 3, 8, 8)), model, calibration)
    mod, record = apply_algorithm(mod, {"conv": conv, "layout": layout, "format": "dense"})
    assert record["convolutions_by_algorithm"] == {conv: 1}
    target = tvm.target.Target(H200)
    source = _cuda_module(tvm.compile(mod, target, relax_pipeline=build_pipeline(target)).mod).inspect_source("cuda")
    cubin = nvcc.compile_cuda(source, target_format="cubin", arch="sm_90")
    assert cubin[:4] == b"\x7fELF" and int.from_bytes(cubin[18:20], "little") == EM_CUDA
    assert source.count("__global__") >= 3  # the convolution, the dense layer, the reshape


def test_nchwc_on_a_gpu_target_keeps_the_model_nchw_and_says_why():
    """Channel blocks fill a CPU's vector registers; for a CUDA target the rewrite keeps NCHW and
    falls back to direct with the reason, instead of a layout with no block size."""
    mod, record = apply_algorithm(to_relax(fold_batchnorm(_small_convnet()), (2, 3, 8, 8)),
                                  {"conv": "nchwc", "layout": "NCHW", "format": "dense"}, tvm.target.Target(H200))
    assert record["convolutions_by_algorithm"] == {"direct": 1}
    assert list(record["algorithm_fallbacks"]) == ["nchwc fills a CPU's vector registers; this target is not "
                                                   "a CPU: the model stays NCHW"]


@pytest.mark.skipif(not cuda_status()[0], reason=f"the CUDA path needs an NVIDIA GPU: {cuda_status()[1]}")
def test_cuda_build_matches_pytorch(tmp_path):
    model = _small_convnet()
    request = BuildRequest(model=model, model_key={"test": "cuda"}, image_shape=(3, 8, 8), batch_size=2,
                           algorithm={"conv": "direct", "layout": "NCHW", "format": "dense"}, software=UNTUNED,
                           device=create_device({"device": "cuda", "threads": 0}))
    executable = compile_model(request, ArtifactCache(tmp_path)).executable
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(images).numpy()
    assert abs(executable.run(images.numpy()) - expected).max() < 1e-4
