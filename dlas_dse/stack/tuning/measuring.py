"""How tuning candidates are built and timed: a pool of build processes kept between batches, the
runner of the trial's device (here, or a board through the tracker), and the tuning deadline."""

from __future__ import annotations

import functools
import os
import time

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import local_builder
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from dlas_dse.build_workers import board_session, build_candidate, export_with, load_tensor_intrinsics
from dlas_dse.stack.devices import Device, RemoteBoard

CANDIDATES_PER_BUILD_PROCESS = 256
"""How many candidates a build process builds before it is replaced (1: new processes for every
batch, as TVM's LocalBuilder does)."""


@derived_object
class Deadline(ms.measure_callback.PyMeasureCallback):
    """Stops every task once the tuning time limit has passed."""

    def __init__(self, deadline: float, task_count: int):
        super().__init__()
        self.deadline, self.task_count = deadline, task_count

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        if time.monotonic() > self.deadline:
            for task in range(self.task_count):
                task_scheduler.terminate_task(task)


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


def builder_and_runner(device: Device) -> tuple[PooledBuilder, ms.runner.Runner]:
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
