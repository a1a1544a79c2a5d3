"""MetaSchedule tuning: tuned builds match PyTorch, the per-target database is shared (a second
model with the same workloads measures nothing), and a task MetaSchedule cannot tune keeps its
default schedule."""

from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import optuna
import pytest
import torch
import tvm
from tvm import te
from tvm.s_tir import meta_schedule as ms

from dlas_dse.cache import ArtifactCache
from dlas_dse.config import load_study
from dlas_dse.stack.algorithms import apply_algorithm
from dlas_dse.stack.algorithms.schedule import fuse_operators
from dlas_dse.stack.compilers import BuildRequest, compile_model, to_relax
from dlas_dse.stack.devices import create_device
from dlas_dse.stack.tuning import TuningAllowance
from dlas_dse.stack.tuning.choice import choose_side_by_side
from dlas_dse.stack.tuning.database import TuningDatabase
from dlas_dse.stack.tuning.measuring import PooledBuilder

TUNED = {"compiler": "tvm", "tuning": "metaschedule", "trials_per_task": 1, "max_trials": 0, "tuning_timeout_s": 0.0}


def host(threads: int):
    return create_device({"device": "host-cpu", "threads": threads})


class Tiny(torch.nn.Module):
    """conv → ReLU → global average → linear: three tuning tasks."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def build(seed: int, cache: ArtifactCache, algorithm: dict, sparsity: float = 0.0, threads: int = 2):
    torch.manual_seed(seed)
    model = Tiny().eval()
    with torch.no_grad():
        model.conv.weight *= torch.rand_like(model.conv.weight) >= sparsity
    request = BuildRequest(model=model, model_key={"seed": seed, "sparsity": sparsity}, image_shape=(3, 8, 8),
                           batch_size=1, algorithm={"layout": "NCHW", "format": "dense", **algorithm},
                           software=TUNED, device=host(threads))
    build = compile_model(request, cache)
    images = np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(build.executable.run(images), expected, rtol=1e-4, atol=1e-5)
    return build.record["tuning"]


@pytest.mark.slow
def test_tuning_is_checked_and_shared_through_the_database(tmp_path):
    cache = ArtifactCache(tmp_path)
    first = build(0, cache, {"conv": "direct"})
    assert first["tasks"] == 3 and first["database_hits"] == 0 and first["tuned_tasks"] == 3
    # one record per task reaches the shared database: the default schedule or the search's best,
    # whichever was faster timed side by side at the end
    assert first["measured_candidates"] == 3 and first["new_records"] == 3
    assert 0 <= first["default_schedule_kept"] <= 3
    # every task's default schedule was measured too and stored as a record: the build takes the
    # faster of it and the tuned candidate, so no function is left to an unmeasured default
    assert first["default_schedule_records"] == 3 and first["default_scheduled"] == []
    second = build(1, cache, {"conv": "direct"})  # other weights, same workloads
    assert second["database_hits"] == 3 and second["tuned_tasks"] == 0 and second["measured_candidates"] == 0
    assert second["default_scheduled"] == first["default_scheduled"]
    third = build(2, cache, {"conv": "direct"}, threads=1)  # same workloads at another thread count
    assert third["database_hits"] == 0 and third["tuned_tasks"] == 3  # its records are its own
    # the first model at 1 thread: a build of its own from the 1-thread records, not the 2-thread build
    fourth = build(0, cache, {"conv": "direct"}, threads=1)
    assert fourth["database_hits"] == 3 and fourth["tuned_tasks"] == 0
    assert len([path for path in (cache.root / "tuning").iterdir() if not path.name.startswith(".")]) == 2


@pytest.mark.slow
def test_sparse_kernel_builds_and_runs_under_tuning(tmp_path):
    record = build(0, ArtifactCache(tmp_path), {"conv": "gemm", "format": "sparse"}, sparsity=0.7)
    assert record["tasks"] == 3
    # tuned, or left to its default schedule with the reason recorded
    for task, reason in record["default_schedule_tasks"].items():
        assert "sparse" in task and reason


def test_tuning_allowance_lowers_the_timeout_then_stops_tuning():
    software = {**TUNED, "tuning_timeout_s": 100.0}
    assert TuningAllowance(None, 1e9).apply(software) == (software, True, False)  # no cap
    assert TuningAllowance(500.0, 300.0).apply(software) == (software, True, False)  # own timeout is lower
    assert TuningAllowance(500.0, 450.0).apply(software) == ({**software, "tuning_timeout_s": 50.0}, True, True)
    assert TuningAllowance(500.0, 500.0).apply(software) == (software, False, True)  # spent: database only
    untuned = {**software, "tuning": "untuned"}
    assert TuningAllowance(0.0, 10.0).apply(untuned) == (untuned, True, False)


@pytest.mark.slow
def test_study_tuning_cap_stops_tuning_once_spent(project, monkeypatch):
    name = project.tiny(threads="{choices: [1, 2]}", sampler="grid", timeout=1800)
    space, study = project.root / "search_spaces" / f"{name}.yaml", project.root / "studies" / f"{name}.yaml"
    space.write_text(space.read_text().replace("  compiler: tvm\n",
                                               "  compiler: tvm\n  tuning: metaschedule\n  trials_per_task: 2\n"))
    study.write_text(study.read_text() + "tuning: {max_total_s: 0.001}\n")
    result = project.run("optimize", "--study", name, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    monkeypatch.chdir(project.root)
    trials = sorted(optuna.load_study(study_name=name, storage=load_study(name).storage).get_trials(),
                    key=lambda t: t.number)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.user_attrs.get("fail_reason")
                                                                              for t in trials]
    first, second = (t.user_attrs for t in trials)
    # the first trial tuned until the deadline the cap left it (seeding the default schedules took
    # longer than 1 ms), stopping long before its budget
    tuning = first["build"]["tuning"]
    assert first["tuning_capped"] and first["time_tune_s"] > 0 and tuning["stopped_by_timeout"]
    assert tuning["default_schedule_records"] == tuning["tuned_tasks"] > 0
    assert tuning["measured_candidates"] < 2 * tuning["tuned_tasks"]
    # the second found the study's tuning time spent: built from the database, measured nothing
    assert second["tuning_capped"] and second["time_tune_s"] == 0.0
    assert second["build"]["tuning"]["tuned_tasks"] == 0 and "measured_candidates" not in second["build"]["tuning"]


def _matmul(size: int) -> tvm.IRModule:
    a, b = te.placeholder((size, size), name="a"), te.placeholder((size, size), name="b")
    k = te.reduce_axis((0, size), name="k")
    c = te.compute((size, size), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


def _merge_worker(cache_dir: str, worker: int, workloads: int, start) -> None:
    """One worker process: merge a record for each of its own workloads, one merge at a time,
    all workers starting together."""
    target = host(1).tvm_target()
    database, privates = TuningDatabase(ArtifactCache(cache_dir), target, 1), []
    for index in range(workloads):
        mod, private = _matmul(8 + worker * workloads + index), ms.database.MemoryDatabase()
        schedule = tvm.s_tir.Schedule(mod)
        schedule.get_loops(schedule.get_sblock("c"))  # MetaSchedule ignores a record with an empty trace
        private.commit_tuning_record(ms.database.TuningRecord(
            schedule.trace, private.commit_workload(mod), [1e-6 * (worker * workloads + index + 1)],
            target, ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
        privates.append(private)
    start.wait()
    for private in privates:
        database.merge(private)


def test_concurrent_workers_merge_into_one_database_without_mixing_records(tmp_path):
    workers, workloads = 4, 10
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers)
    processes = [context.Process(target=_merge_worker, args=(str(tmp_path), worker, workloads, start))
                 for worker in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(300)
        assert process.exitcode == 0
    database = TuningDatabase(ArtifactCache(tmp_path), host(1).tvm_target(), 1).open()
    assert len(database) == workers * workloads
    for number in range(workers * workloads):
        mod = _matmul(8 + number)
        assert database.has_workload(mod)
        (record,) = database.get_top_k(database.commit_workload(mod), 2)
        # each record is still attached to the workload its worker tuned (the run time encodes which)
        tvm.ir.assert_structural_equal(record.workload.mod, mod)
        assert float(record.run_secs[0]) == pytest.approx(1e-6 * (number + 1))


def test_build_processes_are_kept_between_batches_and_start_without_the_stack():
    builder = PooledBuilder()
    # a lambda travels by value: unpickling it imports nothing (a test-module function would import this file)
    build_process = lambda: (os.getpid(), "dlas_dse.stack" in sys.modules)  # noqa: E731  (pid, stack imported?)
    batch = [ms.builder.BuilderInput(_matmul(16), host(1).tvm_target())]
    try:
        processes = set()
        for _ in range(3):
            (result,) = builder.build(batch)
            assert result.error_msg is None and os.path.exists(result.artifact_path)
            probes = {builder.pool.submit(build_process).result() for _ in range(4 * os.cpu_count())}
            assert not any(stack_imported for _, stack_imported in probes)
            processes |= {pid for pid, _ in probes}
        # TVM's LocalBuilder would have started new processes for every batch
        assert len(processes) <= os.cpu_count()
    finally:
        builder.close()


def test_the_default_schedule_wins_when_it_beats_the_searchs_pick_side_by_side():
    conv = torch.nn.Conv2d(16, 32, 3, padding=1).eval()
    target = host(2).tvm_target()
    relax_mod, _ = apply_algorithm(to_relax(conv, (1, 16, 32, 32)), {"conv": "direct", "layout": "NCHW", "format": "dense"})
    (mod,) = [task.dispatched[0] for task in ms.relax_integration.extract_tasks(fuse_operators(relax_mod, target), target)
              if "conv" in task.task_name]
    naive = tvm.s_tir.Schedule(mod)
    for block in naive.get_child_blocks(naive.get_sblock("root")):
        naive.get_loops(block)  # a traced, untransformed loop nest: one thread, no tiling, no vectors
    searched = ms.database.MemoryDatabase()
    searched.commit_tuning_record(ms.database.TuningRecord(  # the search believed it took a nanosecond
        naive.trace, searched.commit_workload(mod), [1e-9], target, ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    builder, runner = PooledBuilder(), ms.runner.LocalRunner(timeout_sec=60)
    try:
        chosen, kept_default = choose_side_by_side([ms.TuneContext(mod, target=target, task_name="conv")],
                                                   searched, builder, runner)
    finally:
        builder.close()
    (record,) = chosen.get_all_tuning_records()
    assert kept_default == 1 and str(record.trace) != str(naive.trace)
    assert float(record.run_secs[0]) > 1e-6  # timed now, not copied from the search
