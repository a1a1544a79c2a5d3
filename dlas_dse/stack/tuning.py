"""Layer 5, auto-scheduling: MetaSchedule tuning with one database per target and thread count.

The database lives in the artifact cache (``tuning/<target key>/``) and is shared by every trial,
study and worker using that cache: a task (a fused PrimFunc, identified structurally) that has a
valid record is never tuned again. Tuning itself runs into a private database; each task's
default schedule and the search's best candidate are then timed side by side, and the faster one
is merged into the shared database under a file lock, so concurrent workers never interleave writes.
A task MetaSchedule cannot tune (e.g. a data-dependent sparse loop) keeps the project's default
schedule, and the record says so.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import local_builder
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from dlas_dse.build_workers import board_session, build_candidate, export_with, load_tensor_intrinsics
from dlas_dse.cache import COMPLETE_MARKER, ArtifactCache
from dlas_dse.stack.algorithms.schedule import fuse_operators, schedule_with_defaults, vector_bits
from dlas_dse.stack.hardware import Device, RemoteBoard

STAGE = "tuning"
DATABASE_FILES = ("workloads.json", "records.json")
"""A MetaSchedule JSONDatabase's two files, in this order."""
LOGGER = logging.getLogger("dlas_dse.tuning")
"""MetaSchedule's per-task progress goes here (warnings and errors only, by default)."""
FAILED_RUN_SECONDS = 1e9
"""MetaSchedule records a candidate that failed to build or run with a huge run time."""
CANDIDATES_PER_BUILD_PROCESS = 256
"""How many candidates a build process builds before it is replaced (1: new processes for every
batch, as TVM's LocalBuilder does)."""


@dataclass(frozen=True)
class TuningBudget:
    """How much measuring one build may spend: trials per task, a cap over all tasks (0: none
    beyond trials per task), and a time limit in seconds (0: none)."""

    trials_per_task: int
    max_trials: int = 0
    timeout_s: float = 0.0


class TuningDatabase:
    """The shared database of one target at one thread count (a schedule tuned at 1 thread is not
    the one to run at 4), in the artifact cache. Its files' digests are recorded
    in the entry's metadata after every merge and checked on every open: a database that fails is
    moved aside to the cache's ``.corrupt/`` (logged) and tuning starts again from an empty one."""

    def __init__(self, cache: ArtifactCache, target: tvm.target.Target, threads: int):
        self.cache = cache
        self.key = cache.key_for(STAGE, {"target": str(target), "threads": threads, "tvm": tvm.__version__})
        self.directory = cache.path(STAGE, self.key)
        self.directory.mkdir(parents=True, exist_ok=True)

    def open(self) -> ms.database.JSONDatabase:
        """The database as it is on disk now (checked; empty if it was corrupt)."""
        with self.cache.lock(STAGE, self.key):
            return self._open_checked()

    def _open_checked(self) -> ms.database.JSONDatabase:
        """``open`` for a caller holding the database's lock."""
        reason = self.cache.problem(STAGE, self.key)
        if reason is None:
            try:
                return self._load()
            except RuntimeError as error:  # TVM raises its parse errors as RuntimeError
                reason = f"MetaSchedule cannot load it ({str(error).strip().splitlines()[-1][:200]})"
        self.cache.quarantine(STAGE, self.key, reason)
        return self._load()

    def _load(self) -> ms.database.JSONDatabase:
        self.directory.mkdir(parents=True, exist_ok=True)
        database = ms.database.JSONDatabase(*(str(self.directory / name) for name in DATABASE_FILES))
        if not (self.directory / COMPLETE_MARKER).exists():  # new (empty files): record them
            self.cache.record_files(STAGE, self.key, list(DATABASE_FILES))
        return database

    def tuned(self, tasks: list) -> set[str]:
        """Names of ``tasks`` that already have a valid record."""
        with self.cache.lock(STAGE, self.key):
            database = self._open_checked()
            return {task.task_name for task in tasks
                    if database.has_workload(task.dispatched[0]) and any(
                        _valid(record) for record in database.get_top_k(database.commit_workload(task.dispatched[0]), 1))}

    def merge(self, private: ms.database.Database) -> int:
        """Add ``private``'s valid records and record the database's new digests; returns how many."""
        records = [record for record in private.get_all_tuning_records() if _valid(record)]
        with self.cache.lock(STAGE, self.key):
            shared = self._open_checked()
            for record in records:
                shared.commit_tuning_record(ms.database.TuningRecord(
                    record.trace, shared.commit_workload(record.workload.mod), record.run_secs,
                    record.target, record.args_info))
            self.cache.record_files(STAGE, self.key, list(DATABASE_FILES))
        return len(records)


@dataclass(frozen=True)
class TuningAllowance:
    """A study's cap on auto-tuning seconds summed over its trials (None: no cap), and what its
    finished trials have spent of it."""

    max_total_s: float | None = None
    spent_s: float = 0.0

    def apply(self, software: dict) -> tuple[dict, bool, bool]:
        """One trial's software parameters under the cap: the parameters (the tuning timeout lowered
        to what is left), whether the trial may tune, and whether the cap limited it."""
        if software.get("tuning") != "metaschedule" or self.max_total_s is None:
            return software, True, False
        left = self.max_total_s - self.spent_s
        if left <= 0:
            return software, False, True
        timeout = software["tuning_timeout_s"]
        if timeout and timeout <= left:
            return software, True, False
        return {**software, "tuning_timeout_s": left}, True, True


def _valid(record: ms.database.TuningRecord) -> bool:
    return bool(record.run_secs) and all(float(s) < FAILED_RUN_SECONDS for s in record.run_secs)


@derived_object
class _Deadline(ms.measure_callback.PyMeasureCallback):
    """Stops every task once the tuning time limit has passed."""

    def __init__(self, deadline: float, task_count: int):
        super().__init__()
        self.deadline, self.task_count = deadline, task_count

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        if time.monotonic() > self.deadline:
            for task in range(self.task_count):
                task_scheduler.terminate_task(task)


def _tunable(contexts: list) -> tuple[list, dict[str, str]]:
    """The contexts MetaSchedule can generate a design space for, and why the others cannot."""
    kept, skipped = [], {}
    for context in contexts:
        try:
            if not context.generate_design_space():
                raise ValueError("empty design space")
            kept.append(context)
        except Exception as error:  # noqa: BLE001  (any failure means: keep the default schedule)
            skipped[context.task_name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return kept, skipped


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """MetaSchedule's LocalBuilder with its build processes kept from one batch to the next.

    TVM's starts new processes for every batch, and each imports TVM and its tensor intrinsics
    (~5-15 s on this 2-core machine) — once per task per search round, more than the building
    itself at small budgets. These are replaced after ``CANDIDATES_PER_BUILD_PROCESS`` candidates
    instead, which bounds the memory TVM's build processes are known to leak. ``close`` stops them."""

    def __init__(self, f_export=None, timeout_s: float = 300.0):
        super().__init__()
        self.f_export, self.timeout_s = f_export, timeout_s
        self.pool: PopenPoolExecutor | None = None
        self.built = 0

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        if self.pool is None or self.built >= CANDIDATES_PER_BUILD_PROCESS:
            self.close()
            self.pool = PopenPoolExecutor(max_workers=os.cpu_count(), timeout=self.timeout_s,
                                          initializer=load_tensor_intrinsics)
        self.built += len(build_inputs)
        arguments = [(None, self.f_export, item.mod, item.target, local_builder._serialize_params(item.params))
                     for item in build_inputs]
        results = []
        for outcome in self.pool.map_with_error_catching(build_candidate, arguments):
            if outcome.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(None, f"build timed out after {self.timeout_s:g} s"))
            else:
                results.append(ms.builder.BuilderResult(None, f"build failed: {outcome.value}"))
        return results

    def close(self) -> None:
        """Stop the build processes (a later ``build`` starts new ones)."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool, self.built = None, 0


def _measurement(device: Device) -> tuple[PooledBuilder, ms.runner.Runner]:
    """How candidates are built and timed: on this machine, or cross-compiled here and timed on a
    board the tracker lends (RPC runner)."""
    compiler = device.details.get("cross_compiler")
    builder = PooledBuilder(f_export=functools.partial(export_with, compiler) if compiler else None)
    if isinstance(device, RemoteBoard):
        host, port = device.tracker
        config = ms.runner.RPCConfig(host, port, device.details["key"], session_timeout_sec=120)
        return builder, ms.runner.RPCRunner(config, max_workers=1,
                                            f_create_session=functools.partial(board_session, device.threads))
    return builder, ms.runner.LocalRunner(timeout_sec=120)


def seed_default_schedules(contexts: list, builder: ms.builder.Builder, runner: ms.runner.Runner,
                           database: ms.database.Database) -> int:
    """Measure every task's default schedule with the tuning's builder and runner and store it as a
    record: the evolutionary search starts from it, and :func:`choose_side_by_side` later times it
    against the search's best, so that a tuned task does not take a slower schedule than its default.
    Returns how many were stored (a CPU's schedules; dlight's GPU ones are not seeded)."""
    schedules = [(context, schedule_with_defaults(context.mod, vector_bits(context.target)))
                 for context in contexts if context.target.kind.name == "llvm"]
    built = builder.build([ms.builder.BuilderInput(sch.mod, context.target) for context, sch in schedules])
    measured = [(context, sch, result) for (context, sch), result in zip(schedules, built) if result.error_msg is None]
    futures = runner.run([ms.runner.RunnerInput(result.artifact_path, "cpu",
                                                ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"]))
                          for context, sch, result in measured])
    stored = 0
    for (context, sch, _), future in zip(measured, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, database.commit_workload(context.mod), result.run_secs, context.target,
                ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])))
            stored += 1
    return stored


def _median_seconds(run_secs) -> float:
    return float(np.median([float(seconds) for seconds in run_secs]))


def choose_side_by_side(contexts: list, searched: ms.database.Database, builder: ms.builder.Builder,
                        runner: ms.runner.Runner, rounds: int = 3) -> tuple[ms.database.MemoryDatabase, int]:
    """One record per task: its default schedule or the search's best candidate, whichever is
    faster when the two are timed in alternation now (``rounds`` times each, median). The search
    timed them minutes apart, once each, so a moment of load on a shared machine could crown a
    slower kernel. Returns the chosen records and how many tasks kept their default schedule."""
    chosen, duels, kept_default = ms.database.MemoryDatabase(), [], 0
    for context in contexts:
        best = [record for record in searched.get_top_k(searched.commit_workload(context.mod), 1) if _valid(record)]
        if not best:
            continue
        default = schedule_with_defaults(context.mod, vector_bits(context.target)) \
            if context.target.kind.name == "llvm" else None  # GPUs: dlight's rules, never measured as records
        if default is None or str(default.trace) == str(best[0].trace):
            kept_default += default is not None
            chosen.commit_tuning_record(_rebased(best[0], context.mod, chosen, best[0].run_secs))
        else:
            duels.append((context, best[0], default))
    modules = [(context, mod) for context, _, default in duels  # the search's pick, then the default
               for mod in (searched.query_ir_module(context.mod, context.target, "main"), default.mod)]
    built = builder.build([ms.builder.BuilderInput(mod, context.target) for context, mod in modules]) if modules else []
    timings: dict[int, list[float]] = {index: [] for index, result in enumerate(built) if result.error_msg is None}
    inputs = [ms.runner.RunnerInput(built[index].artifact_path, "cpu",
                                    ms.arg_info.ArgInfo.from_prim_func(modules[index][1]["main"])) for index in timings]
    for _ in range(rounds if inputs else 0):
        for index, future in zip(timings, runner.run(inputs)):
            result = future.result()
            timings[index] += result.run_secs if result.error_msg is None and result.run_secs else [FAILED_RUN_SECONDS]
    for index, (context, best, default) in enumerate(duels):
        if 2 * index not in timings or 2 * index + 1 not in timings:  # a build failed: trust the search
            chosen.commit_tuning_record(_rebased(best, context.mod, chosen, best.run_secs))
            continue
        searched_s, default_s = _median_seconds(timings[2 * index]), _median_seconds(timings[2 * index + 1])
        if default_s <= searched_s:
            kept_default += 1
            chosen.commit_tuning_record(ms.database.TuningRecord(
                default.trace, chosen.commit_workload(context.mod), [default_s], context.target,
                ms.arg_info.ArgInfo.from_prim_func(default.mod["main"])))
        else:
            chosen.commit_tuning_record(_rebased(best, context.mod, chosen, [searched_s]))
    return chosen, kept_default


def _rebased(record: ms.database.TuningRecord, mod: tvm.IRModule, database: ms.database.Database,
             run_secs) -> ms.database.TuningRecord:
    """``record`` for ``mod``'s workload in ``database``, with ``run_secs``."""
    return ms.database.TuningRecord(record.trace, database.commit_workload(mod), [float(s) for s in run_secs],
                                    record.target, record.args_info)


def tune(mod: tvm.IRModule, device: Device, cache: ArtifactCache, budget: TuningBudget,
         seed: int = 0) -> tuple[ms.database.Database, dict]:
    """Tune the tasks of ``mod`` that the shared database lacks, measuring on ``device``; returns
    the database to build with and a record (tasks, database hits, measured candidates, tasks left
    to default schedules)."""
    started = time.perf_counter()
    load_tensor_intrinsics()
    target = device.tvm_target()
    shared = TuningDatabase(cache, target, device.threads)
    tasks = ms.relax_integration.extract_tasks(fuse_operators(mod, target), target)
    hits = shared.tuned(tasks)
    missing = [task for task in tasks if task.task_name not in hits]
    record = {"tasks": len(tasks), "database_hits": len(hits), "tuned_tasks": 0, "measured_candidates": 0,
              "new_records": 0, "default_schedule_tasks": {}}
    if missing:
        work_dir = Path(tempfile.mkdtemp(prefix="run-", dir=shared.directory))
        try:
            population = min(512, max(64, 16 * budget.trials_per_task))  # small budgets need no huge population
            strategy = ms.search_strategy.EvolutionarySearch(population_size=population,
                                                             init_min_unmeasured=min(50, population // 4))
            contexts = [ms.TuneContext(task.dispatched[0], target=task.target, space_generator="post-order-apply",
                                       search_strategy=strategy, task_name=task.task_name, logger=LOGGER,
                                       rand_state=seed + index).clone() for index, task in enumerate(missing)]
            weights = [task.weight for task in missing]
            tunable, record["default_schedule_tasks"] = _tunable(contexts)
            weights = [w for c, w in zip(contexts, weights) if c in tunable]
            if tunable:
                private = ms.database.JSONDatabase(str(work_dir / "workloads.json"), str(work_dir / "records.json"))
                max_trials = budget.trials_per_task * len(tunable)
                callbacks = list(ms.measure_callback.MeasureCallback.create("default"))
                deadline = time.monotonic() + budget.timeout_s if budget.timeout_s else None
                if deadline:
                    callbacks.append(_Deadline(deadline, len(tunable)))
                builder, runner = _measurement(device)
                record["default_schedule_records"], chosen = 0, private
                try:
                    record["default_schedule_records"] = seed_default_schedules(tunable, builder, runner, private)
                    record["stopped_by_timeout"] = bool(deadline and time.monotonic() > deadline)
                    if not record["stopped_by_timeout"]:
                        # the gradient scheduler sends every task once before it runs any callback, so
                        # only round-robin lets the deadline stop the search after the current batch
                        ms.tune_tasks(tasks=tunable, task_weights=weights, work_dir=str(work_dir),
                                      max_trials_global=min(max_trials, budget.max_trials or max_trials),
                                      max_trials_per_task=budget.trials_per_task,
                                      num_trials_per_iter=min(budget.trials_per_task, 64),
                                      builder=builder, runner=runner, database=private,
                                      measure_callbacks=callbacks,
                                      task_scheduler="round-robin" if deadline else "gradient")
                        record["stopped_by_timeout"] = bool(deadline and time.monotonic() > deadline)
                    chosen, record["default_schedule_kept"] = choose_side_by_side(tunable, private, builder, runner)
                except Exception as error:  # noqa: BLE001  (what was measured is kept; the rest keeps defaults)
                    record["tuning_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                finally:
                    builder.close()
                record.update(tuned_tasks=len(tunable),
                              measured_candidates=len(private.get_all_tuning_records())
                              - record["default_schedule_records"],
                              new_records=shared.merge(chosen))
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    record["seconds"] = time.perf_counter() - started
    return shared.open(), record
