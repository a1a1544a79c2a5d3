"""The CPU peak: an FMA microkernel that really is vector FMAs on registers, cached per CPU and
thread count, and an upper bound that fast real kernels never exceed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import tvm

from dlas_dse.cache import ArtifactCache
from dlas_dse.stack import peak
from dlas_dse.stack.algorithms.schedule import lanes, vector_bits

AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
THREADS = min(2, os.cpu_count() or 1)


def fma_loop(asm: str, fma: str) -> list[str]:
    """The instructions of the loop that holds the kernel's first ``fma`` instruction (from the
    label before it to the branch back to that label)."""
    lines = [line.strip() for line in asm.splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith(fma))
    start = max(i for i in range(first) if re.fullmatch(r"\.?L\w+:", lines[i]))
    label = lines[start][:-1]
    end = next(i for i in range(first, len(lines)) if lines[i].split()[-1:] == [label])
    return [line for line in lines[start + 1:end + 1] if line and not line.startswith(("#", "//", "."))]


def assert_only_fmas_on_registers(loop: list[str], fma: str, register: str, chains: int) -> None:
    """The loop is ``chains`` (or a multiple: unrolled) vector FMAs on ``register`` registers and
    its counter: no load, no store, no register copy."""
    fmas = [line for line in loop if line.startswith(fma)]
    assert fmas and len(fmas) % chains == 0 and all(register in line for line in fmas), loop
    assert len(loop) - len(fmas) <= 3, loop  # the counter's update, compare, branch
    assert not any(re.search(r"\(|\[(x\d+|sp)", line) for line in loop), loop  # x86 (%reg), AArch64 [xN]


def test_the_kernel_is_vector_fmas_on_registers_for_the_host_and_aarch64():
    host = tvm.target.Target(peak.host_target())
    width = lanes(vector_bits(host), "float32")
    loop = fma_loop(peak.build_fma_kernel(host, THREADS, width).inspect_source("asm"), "vfmadd")
    assert_only_fmas_on_registers(loop, "vfmadd", {16: "zmm", 8: "ymm", 4: "xmm"}[width], peak.fma_chains(host))

    board = tvm.target.Target(AARCH64)
    loop = fma_loop(peak.build_fma_kernel(board, THREADS, 4).inspect_source("asm"), "fmla")
    assert_only_fmas_on_registers(loop, "fmla", ".4s", peak.fma_chains(board))


def test_the_peak_is_measured_once_per_cpu_and_thread_count(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)
    measured = peak.cpu_peak(cache, "some cpu", 1)
    assert measured["gflops"] > 0 and measured["threads"] == 1
    assert "FMA" in measured["method"] and "1 thread(s)" in measured["method"]

    def must_not_measure(*args):
        raise AssertionError("a cached peak was measured again")

    monkeypatch.setattr(peak, "measure_cpu_peak", must_not_measure)
    assert peak.cpu_peak(cache, "some cpu", 1) == measured
    assert peak.cpu_peak(cache, "some cpu", 2, measure=False) is None
    assert peak.cpu_peak(cache, "another cpu", 1, measure=False) is None


FAST_KERNELS = textwrap.dedent("""\
    import json, sys, tempfile
    import numpy as np, threadpoolctl, time, torch
    from dlas_dse.cache import ArtifactCache
    from dlas_dse.stack.compilers import BuildRequest, compile_model
    from dlas_dse.stack.devices import create_device
    from dlas_dse.stack.peak import measure_cpu_peak

    threads = int(sys.argv[1])
    device = create_device({"device": "host-cpu", "threads": threads})
    device.configure_runtime()
    a, b = (np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32) for _ in range(2))
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        a @ b
        seconds = []
        for _ in range(10):
            started = time.perf_counter()
            a @ b
            seconds.append(time.perf_counter() - started)
    gflops = {"numpy gemm 1024": 2 * 1024 ** 3 / min(seconds) / 1e9}
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU()).eval()
    image = np.random.default_rng(0).standard_normal((1, 64, 32, 32)).astype(np.float32)
    cache = ArtifactCache(tempfile.mkdtemp())
    for compiler in ("tvm", "onnxruntime"):
        software = {"compiler": compiler, "tuning": "untuned", "trials_per_task": 1, "max_trials": 0,
                    "tuning_timeout_s": 0.0}
        request = BuildRequest(model=conv, model_key={"conv": compiler}, image_shape=(64, 32, 32), batch_size=1,
                               algorithm={"conv": "direct", "layout": "NCHW", "format": "dense"}, software=software,
                               device=device, tune=False)
        build = compile_model(request, cache)
        gflops[f"{compiler} conv 64x64x3x3"] = 2 * build.macs / min(build.executable.time_runs(image, 30)) / 1e9
    print(json.dumps({"peak": measure_cpu_peak(threads)["gflops"], **gflops}))
""")


def test_fast_real_kernels_run_at_most_the_peak():
    """NumPy's GEMM and a convolution compiled by TVM and by ONNX Runtime, each its best run at the
    same threads, in a fresh process whose TVM thread pool has them."""
    result = subprocess.run([sys.executable, "-c", FAST_KERNELS, str(THREADS)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TVM_NUM_THREADS": str(THREADS)})
    assert result.returncode == 0, result.stderr
    gflops = json.loads(result.stdout.splitlines()[-1])
    bound = gflops.pop("peak")
    for kernel, achieved in gflops.items():
        assert 0 < achieved <= bound, f"{kernel}: {achieved:.1f} GFLOP/s over the peak {bound:.1f}"


@pytest.mark.parametrize("mcpu, chains", [("haswell", 12), ("skylake-avx512", 16), ("znver4", 16)])
def test_chains_fit_the_vector_registers(mcpu, chains):
    assert peak.fma_chains(tvm.target.Target({"kind": "llvm", "mcpu": mcpu})) == chains
