"""The side-by-side choice: per task, its default schedule or the search's best candidate, whichever
is faster when the two are timed in alternation now."""

from __future__ import annotations

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.stack.algorithms.schedule import schedule_with_defaults, vector_bits
from dlas_dse.stack.tuning.database import FAILED_RUN_SECONDS, valid_record

tvm = lazy_import("tvm")
ms = lazy_import("tvm.s_tir.meta_schedule")


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
        best = [record for record in searched.get_top_k(searched.commit_workload(context.mod), 1) if valid_record(record)]
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
