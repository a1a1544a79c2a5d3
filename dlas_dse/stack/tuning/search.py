"""``tune``: prepare the tasks the shared database lacks, search them with MetaSchedule, choose
per task between the search's best and the default schedule, and merge the choice."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dlas_dse.build_workers import load_tensor_intrinsics
from dlas_dse.cache import ArtifactCache
from dlas_dse.lazy import lazy_import
from dlas_dse.stack.algorithms.schedule import fuse_operators, schedule_with_defaults, vector_bits
from dlas_dse.stack.devices import Device
from dlas_dse.stack.tuning.allowance import TuningBudget
from dlas_dse.stack.tuning.choice import choose_side_by_side
from dlas_dse.stack.tuning.database import TuningDatabase

tvm = lazy_import("tvm")
ms = lazy_import("tvm.s_tir.meta_schedule")
measuring = lazy_import("dlas_dse.stack.tuning.measuring")

LOGGER = logging.getLogger("dlas_dse.tuning")
"""MetaSchedule's per-task progress goes here (warnings and errors only, by default)."""


@dataclass
class TuningWork:
    """What :func:`prepare` found: the shared database, the model's tasks, which of them it
    already holds, and the tuning contexts of those it lacks that MetaSchedule can tune."""

    shared: TuningDatabase
    tasks: list
    hits: set[str]
    contexts: list
    weights: list[float]
    untunable: dict[str, str]
    """Tasks left to their default schedule, and why."""


def prepare(mod: tvm.IRModule, device: Device, cache: ArtifactCache, budget: TuningBudget, seed: int) -> TuningWork:
    """Extract ``mod``'s tasks for ``device``'s target and set up a search for those the shared
    database lacks (small budgets get a small population)."""
    target = device.tvm_target()
    shared = TuningDatabase(cache, target, device.threads)
    tasks = ms.relax_integration.extract_tasks(fuse_operators(mod, target), target)
    hits = shared.tuned(tasks)
    missing = [task for task in tasks if task.task_name not in hits]
    population = min(512, max(64, 16 * budget.trials_per_task))
    strategy = ms.search_strategy.EvolutionarySearch(population_size=population,
                                                     init_min_unmeasured=min(50, population // 4))
    contexts = [ms.TuneContext(task.dispatched[0], target=task.target, space_generator="post-order-apply",
                               search_strategy=strategy, task_name=task.task_name, logger=LOGGER,
                               rand_state=seed + index).clone() for index, task in enumerate(missing)]
    tunable, untunable = _tunable(contexts)
    weights = [task.weight for task, context in zip(missing, contexts) if context in tunable]
    return TuningWork(shared, tasks, hits, tunable, weights, untunable)


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


def search(work: TuningWork, builder: ms.builder.Builder, runner: ms.runner.Runner,
           private: ms.database.Database, budget: TuningBudget, work_dir: Path) -> dict:
    """Seed ``private`` with the default schedules, then search within ``budget``; returns what
    was seeded and whether the time limit stopped the search."""
    callbacks = list(ms.measure_callback.MeasureCallback.create("default"))
    deadline = time.monotonic() + budget.timeout_s if budget.timeout_s else None
    if deadline:
        callbacks.append(measuring.Deadline(deadline, len(work.contexts)))
    record = {"default_schedule_records": seed_default_schedules(work.contexts, builder, runner, private)}
    record["stopped_by_timeout"] = bool(deadline and time.monotonic() > deadline)
    if not record["stopped_by_timeout"]:
        max_trials = budget.trials_per_task * len(work.contexts)
        # the gradient scheduler sends every task once before it runs any callback, so only
        # round-robin lets the deadline stop the search after the current batch
        ms.tune_tasks(tasks=work.contexts, task_weights=work.weights, work_dir=str(work_dir),
                      max_trials_global=min(max_trials, budget.max_trials or max_trials),
                      max_trials_per_task=budget.trials_per_task,
                      num_trials_per_iter=min(budget.trials_per_task, 64),
                      builder=builder, runner=runner, database=private, measure_callbacks=callbacks,
                      task_scheduler="round-robin" if deadline else "gradient")
        record["stopped_by_timeout"] = bool(deadline and time.monotonic() > deadline)
    return record


def _search_and_choose(work: TuningWork, device: Device, budget: TuningBudget, work_dir: Path) -> dict:
    """Search into a private database in ``work_dir``, choose side by side, merge the choice into
    the shared database; returns the record's counts."""
    private = ms.database.JSONDatabase(str(work_dir / "workloads.json"), str(work_dir / "records.json"))
    builder, runner = measuring.builder_and_runner(device)
    record, chosen = {"default_schedule_records": 0}, private
    try:
        record.update(search(work, builder, runner, private, budget, work_dir))
        chosen, record["default_schedule_kept"] = choose_side_by_side(work.contexts, private, builder, runner)
    except Exception as error:  # noqa: BLE001  (what was measured is kept; the rest keeps defaults)
        record["tuning_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    finally:
        builder.close()
    return {**record, "tuned_tasks": len(work.contexts), "new_records": work.shared.merge(chosen),
            "measured_candidates": len(private.get_all_tuning_records()) - record["default_schedule_records"]}


def tune(mod: tvm.IRModule, device: Device, cache: ArtifactCache, budget: TuningBudget,
         seed: int = 0) -> tuple[ms.database.Database, dict]:
    """Tune the tasks of ``mod`` that the shared database lacks, measuring on ``device``; returns
    the database to build with and a record (tasks, database hits, measured candidates, tasks left
    to default schedules)."""
    started = time.perf_counter()
    load_tensor_intrinsics()
    work = prepare(mod, device, cache, budget, seed)
    record = {"tasks": len(work.tasks), "database_hits": len(work.hits), "tuned_tasks": 0,
              "measured_candidates": 0, "new_records": 0, "default_schedule_tasks": work.untunable}
    if work.contexts:
        work_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work.shared.directory))
        try:
            record.update(_search_and_choose(work, device, budget, work_dir))
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    record["seconds"] = time.perf_counter() - started
    return work.shared.open(), record
