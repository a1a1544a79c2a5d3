"""Remote devices on loopback: a real TVM RPC tracker and server on 127.0.0.1 (this host as the
board, under its own key). A trial measures and computes accuracy through RPC; MetaSchedule
tunes through the RPC runner."""

from __future__ import annotations

import gc
import time

import numpy as np
import optuna
import psutil
import pytest
import torch
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from dlas_dse.build_workers import board_session
from dlas_dse.cache import ArtifactCache
from dlas_dse.stack.compilers import BuildRequest, compile_model
from dlas_dse.stack.devices import HOST_CORES, RemoteBoard
from dlas_dse.stack.measurement import measure_latency
from dlas_dse.stack.remote import RemoteSession, loopback_tracker
from test_tuning import TUNED, Tiny

pytestmark = pytest.mark.slow
KEY = "dlas-loopback"


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """A tracker and one RPC server registered under KEY; yields (port, server log path)."""
    log = tmp_path_factory.mktemp("rpc") / "server.log"
    with loopback_tracker(KEY, log) as port:
        yield port, log


def host_target() -> dict:
    return {"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu()), "num-cores": HOST_CORES}


def local_median_ms(library, threads: int) -> float:
    """The same artifact loaded in this process and timed with the trials' protocol."""
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    tvm.get_global_func("runtime.config_threadpool")(1, threads)
    data = tvm.runtime.tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=1)
    return measure_latency(lambda n: [timer(data).results[0] for _ in range(n)], 2, 10, 500, 1.0).median_ms


def test_trial_measures_and_evaluates_through_rpc(project, tracker):
    port, log = tracker
    project.write("search_spaces", "hardware", f"""\
        devices:
          host-cpu: {{kind: local-cpu}}
          loopback: {{kind: rpc, target: {host_target()}, tracker: '127.0.0.1:{port}', key: {KEY},
                      cores: {HOST_CORES}}}
        """.replace("'", '"'))
    name = project.tiny(threads="1")
    space = project.root / "search_spaces" / f"{name}.yaml"
    space.write_text(space.read_text().replace("device: host-cpu", "device: loopback"))
    served_before = log.read_text().count("connected from")
    result = project.run("optimize", "--study", name, "--n-trials", "1", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{project.root / 'results' / name}.db"  # this process's catalogue has no loopback
    (trial,) = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    attributes = trial.user_attrs
    assert attributes["device"] == "loopback" and attributes["latency"]["cores"] is None
    assert 0.0 < trial.values[0] <= 1.0  # accuracy, computed by the board
    assert log.read_text().count("connected from") > served_before  # the board served the trial
    remote = attributes["latency"]["median_ms"]
    local = local_median_ms(ArtifactCache(project.cache).path("build", attributes["build"]["build_key"])
                            / "model.so", threads=1)
    assert 1 / 3 < remote / local < 3, f"remote {remote:.3f} ms vs local {local:.3f} ms"


def test_tuning_measures_candidates_through_the_rpc_runner(tmp_path, tracker):
    port, _ = tracker
    board = RemoteBoard("loopback", host_target(), 1, "this host over RPC", HOST_CORES,
                        {"kind": "rpc", "tracker": f"127.0.0.1:{port}", "key": KEY})
    torch.manual_seed(0)
    model = Tiny().eval()
    request = BuildRequest(model=model, model_key={"test": "rpc-tuning"}, image_shape=(3, 8, 8), batch_size=1,
                           algorithm={"conv": "direct", "layout": "NCHW", "format": "dense"}, software=TUNED,
                           device=board)
    build = compile_model(request, ArtifactCache(tmp_path))
    executable, record = build.executable, build.record
    assert record["tuning"]["measured_candidates"] >= 1 and record["tuning"]["new_records"] >= 1
    images = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(executable.run(images), expected, rtol=1e-4, atol=1e-5)  # run on the board


def test_a_board_runs_the_threads_a_trial_asks_for(tracker):
    """Every core of the loopback board is usable (TVM would run half of an x86 CPU's by default),
    and a thread count beyond the board's pool fails with what to do, not a slower measurement."""
    port, _ = tracker
    gc.collect()  # earlier tests' sessions (held in reference cycles) give the board back
    session = RemoteSession("127.0.0.1", port, KEY, HOST_CORES, timeout_s=60)
    assert session.session.get_function("runtime.NumThreads")() == HOST_CORES
    del session  # frees the board for the next request
    with pytest.raises(RuntimeError, match=f"runs TVM kernels on {HOST_CORES} thread.*TVM_NUM_THREADS"):
        RemoteSession("127.0.0.1", port, KEY, HOST_CORES + 1, timeout_s=60)


@pytest.mark.skipif(HOST_CORES < 2, reason="a one-core board runs one thread whatever is asked")
def test_the_rpc_runner_times_candidates_at_the_trials_threads(tracker):
    port, _ = tracker
    gc.collect()  # earlier tests' sessions give the board back
    session = board_session(1, ms.runner.RPCConfig("127.0.0.1", port, KEY, session_timeout_sec=60))
    assert session.get_function("runtime.NumThreads")() == 1  # the board's pool has every core


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_loopback_tracker_leaves_no_process_behind():
    """The tracker and the server each run their loop in a TVM worker process of their own: those
    must stop with them, not live on as orphans."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with loopback_tracker("dlas-leak-check"):
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        assert len(started) >= 4  # the two commands and the worker each one serves from
    deadline = time.monotonic() + 10
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(started)
