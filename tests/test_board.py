"""The emulated AArch64 board: a Debian arm64 root under QEMU user-mode emulation serving TVM RPC.

Real builds, a real root (built once per machine, ~6 min; reused after), real AArch64 execution:
the study's artifacts are cross-compiled here, uploaded, verified against PyTorch and evaluated on
the emulated board. Needs root and the Debian packages qemu-user-static, debootstrap and
binfmt-support (`make test` installs them); without them the board tests are skipped with the reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest

from dlas_dse.board import emulation, root, server
from dlas_dse.board.state import read_state
from dlas_dse.cache import ArtifactCache
from dlas_dse.stack.remote import TRACKER_VARIABLE, stop_process_group

pytestmark = pytest.mark.slow

SPACE = """\
description: one resnet18 (fp32, direct) and one mobilenet_v2 (int8, im2col-GEMM) trial on the edge-arm board
dataset:
  name: digits
model:
  architecture: {choices: [resnet18, mobilenet_v2]}
  epochs: 0                      # untrained (BatchNorm recalibrated): accuracy is real, and fast to get
  seed: 0
compression:
  technique: {choices: [none, int8]}
  calibration_images: 64
algorithm:
  conv: {choices: [direct, gemm]}
software:
  compiler: tvm
  tuning: untuned
hardware:
  device: edge-arm
  threads: 1
constraints:
  - name: resnet18-fp32-direct
    if: {model.architecture: resnet18}
    then: {compression.technique: [none], algorithm.conv: [direct]}
  - name: mobilenet-int8-gemm
    if: {model.architecture: mobilenet_v2}
    then: {compression.technique: [int8], algorithm.conv: [gemm]}
"""

STUDY = """\
description: the edge workflow on the emulated board, kept small (emulation is slow)
space: board
sampler: grid
n_trials: 2
seed: 0
trial_timeout_s: 1500
evaluation: {batch_size: 4, max_samples: 4}
measurement: {warmup_runs: 0, min_repeats: 1, max_repeats: 1, min_time_s: 0.0, rounds: 1, max_discarded: 0}
verification: {samples: 2}
"""
EXPECTED = {("resnet18", "none", "direct"), ("mobilenet_v2", "int8", "gemm")}


@pytest.fixture(scope="module")
def board_root() -> Path:
    """The machine's board root, built if it is not (minutes, once per machine)."""
    try:
        return root.build()
    except emulation.EmulationUnavailable as error:
        pytest.skip(str(error))


def _board_processes(board: Path) -> list[psutil.Process]:
    """Processes running the board's root or its tracker (none may be left after a test)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(board) in command or ("rpc_server" in command and "--key edge-arm" in command):
            found.append(process)
    return found


def _trials(project, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{project.root / 'results' / name}.db").get_trials()


def _is_aarch64_library(path: Path) -> bool:
    """An ELF shared object for AArch64 (e_machine 183): it cannot run on this x86 host."""
    header = path.read_bytes()[:20]
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183


def test_a_study_runs_on_the_emulated_board(project, board_root):
    project.write("search_spaces", "board", SPACE)
    project.write("studies", "board", STUDY)
    log = board_root.with_name(board_root.name + ".server.log")
    started = time.monotonic()
    result = project.run("board", "run", "--", sys.executable, "-m", "dlas_dse", "optimize", "--study", "board",
                         "--no-progress", timeout=2400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"study on the emulated board: {time.monotonic() - started:.0f} s")
    trials = _trials(project, "board")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], [t.user_attrs.get("fail_reason") for t in trials]
    assert {(t.params["model.architecture"], t.params["compression.technique"], t.params["algorithm.conv"])
            for t in trials} == EXPECTED
    for trial in trials:
        attributes = trial.user_attrs
        assert attributes["emulated"] is True and attributes["device_kind"] == "rpc, emulated"
        ran_on = attributes["verification"]["ran_on"]
        assert "'edge-arm'" in ran_on and "aarch64" in ran_on and "emulated" in ran_on
        assert attributes["verification"]["samples"] == 2 and 0.0 <= trial.values[0] <= 1.0
        library = ArtifactCache(project.cache).path("build", attributes["build"]["build_key"]) / "model.so"
        assert _is_aarch64_library(library)  # ran, verified and evaluated: on AArch64, so on the board
    assert "connected from" in log.read_text()  # the board's RPC server served the sessions
    shown = project.run("show", "--study", "board")
    assert shown.returncode == 0 and "2 trial(s) ran on an emulated device" in shown.stdout
    assert shown.stdout.count("emulated: latency is the emulator's") == 2
    assert read_state(board_root) is None and not _board_processes(board_root)


def test_the_board_dying_mid_trial_fails_that_trial_and_the_study_goes_on(project, board_root):
    project.write("search_spaces", "board", SPACE)
    project.write("studies", "board", STUDY)
    with server.running(board_root) as state:
        log = Path(state.log)
        served = log.read_text().count("connected from")
        study = subprocess.Popen(project.command("optimize", "--study", "board", "--no-progress", "--no-remeasure"),
                                 cwd=project.root, env={**project.env(), TRACKER_VARIABLE: state.tracker},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 1800
            while log.read_text().count("connected from") == served:  # the first trial holds the board
                assert study.poll() is None and time.monotonic() < deadline, study.stdout.read()[-3000:]
                time.sleep(0.2)
            stop_process_group(state.pids[1])  # the board's RPC server (and its worker) dies
            output, _ = study.communicate(timeout=1800)
        finally:
            if study.poll() is None:
                study.kill()
    first, second = _trials(project, "board")
    assert first.state.name == "FAIL", output[-3000:]
    reason = first.user_attrs["fail_reason"]  # TVM's own words for a lost session vary: any connection error
    assert "the board under key 'edge-arm' failed mid-trial" in reason, reason
    assert re.search(r"(?i)connect|socket|closed|broken|reset|rpc|session", reason.split("):", 1)[1]), reason
    assert second.state.name == "FAIL" and "no board to run on" in second.user_attrs["fail_reason"]
    assert read_state(board_root) is None and not _board_processes(board_root)


def test_a_second_build_reuses_the_root(project, board_root):
    marker = board_root / root.MARKER
    built = marker.stat().st_mtime_ns
    result = project.run("board", "build", timeout=300)
    assert result.returncode == 0 and f"reusing the board's root at {board_root}" in result.stderr, result.stderr
    assert marker.stat().st_mtime_ns == built and not board_root.with_name(board_root.name + ".partial").exists()


def test_without_qemu_the_board_says_what_to_install_and_writes_nothing(project, tmp_path):
    missing = tmp_path / "missing-qemu-aarch64-static"
    board = tmp_path / "board" / "root"
    environment = {**project.env(), emulation.QEMU_VARIABLE: str(missing), root.ROOT_VARIABLE: str(board)}
    for action in (["build"], ["start"], ["run", "--", "true"]):
        result = subprocess.run(project.command("board", *action), cwd=project.root, env=environment,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (action, result.stderr)
        assert str(missing) in result.stderr and "apt-get install qemu-user-static debootstrap binfmt-support" \
            in result.stderr, result.stderr
        assert result.stderr.count("error:") == 1
    assert not (tmp_path / "board").exists() and not (project.root / "results").exists()


def test_emulated_latencies_are_marked_and_kept_out_of_latency_findings():
    """Two models whose emulated latencies differ twofold: show marks them, the observations, the
    surrogate's rows and remeasure leave them out; the observation without latency keeps them."""
    from dlas_dse.analysis import observations
    from dlas_dse.analysis.plots import EMULATED, label, plottable
    from dlas_dse.analysis.report import describe_study, detailed_frame
    from dlas_dse.remeasure import select_trials
    from dlas_dse.surrogate.data import measured_trials

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms", "size_bytes"])
    for architecture, latency_ms, size, accuracy in (("small", 2.0, 1e6, 0.9), ("big", 1.0, 4e6, 0.8)):
        config = {"model.architecture": architecture, "hardware.device": "edge-arm", "hardware.threads": 1}
        rounds = [latency_ms * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
        study.add_trial(optuna.trial.create_trial(values=[accuracy, latency_ms, size], params={}, distributions={},
                                                  user_attrs={"config": config, "threads": 1, "emulated": True,
                                                              "build": {"build_key": architecture},
                                                              "latency": {"round_ms": rounds, "noisy": False}}))
    shown = describe_study(study)
    assert "2 trial(s) ran on an emulated device" in shown and shown.count("emulated: latency is the emulator's") == 2
    frame = detailed_frame(study)
    assert frame["emulated"].tolist() == [True, True]
    found = {o.title: o for o in observations.compute(frame, "demo")}
    smaller = found["A smaller model is not always faster"]
    assert smaller.verdict == observations.NOT_ENOUGH_DATA and "emulated" in smaller.summary
    accuracy = found["A smaller model is not always less accurate"]  # no latency: the trials count
    assert accuracy.verdict == observations.HOLDS
    assert (plottable(frame)["latency_source"] == EMULATED).all() and "2 of 2 emulated" in label(plottable(frame), "latency_ms")
    assert len(measured_trials([study])) == 0 and select_trials(study, everything=True) == []


def test_int8_on_the_sdot_instruction_runs_bit_for_bit_on_the_emulated_board(board_root, tmp_path):
    """An AArch64 build with +dotprod tensorizes int8 convolutions with sdot; the emulated CPU (QEMU's
    `max`) executes it, and the result is the exact integer convolution."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import tvm
    from tvm import relax

    from dlas_dse.stack.algorithms import apply_algorithm, build_pipeline
    from dlas_dse.stack.algorithms.conv import ConvSpec, conv_module
    from dlas_dse.stack.remote import RemoteSession, parse_address

    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]})
    spec = ConvSpec(1, 32, 8, 8, 16, 3, 3, (1, 1), (1, 1, 1, 1), data_dtype="int8", weight_dtype="int8",
                    out_dtype="int32")
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, (16, 32, 3, 3)).astype(np.int8)
    data = rng.integers(-128, 128, (1, 32, 8, 8)).astype(np.int8)
    mod, record = apply_algorithm(conv_module([spec], [weight]), {"conv": "direct"}, target)
    assert record["convolutions_by_algorithm"] == {"direct_neon_sdot": 1}
    library = tmp_path / "sdot" / "conv.so"
    library.parent.mkdir()
    tvm.compile(mod, target, relax_pipeline=build_pipeline(target)).export_library(str(library),
                                                                                  cc="aarch64-linux-gnu-gcc")
    expected = F.conv2d(torch.from_numpy(data).double(), torch.from_numpy(weight).double(), padding=1).numpy()
    with server.running(board_root) as state:
        session = RemoteSession(*parse_address(state.tracker), state.key, threads=1, timeout_s=600)
        machine = relax.VirtualMachine(session.load(library), session.device)
        out = machine["conv0"](tvm.runtime.tensor(data, session.device)).numpy()
        del machine, session
    assert np.array_equal(out, expected.astype(np.int32))
    assert read_state(board_root) is None and not _board_processes(board_root)
