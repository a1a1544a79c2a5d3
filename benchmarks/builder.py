"""What keeping MetaSchedule's build processes saves.

The same model is tuned at the same budget twice, side by side in one run, each time from an empty
tuning database: once with new build processes for every batch of candidates (what TVM's
LocalBuilder does; `measuring.CANDIDATES_PER_BUILD_PROCESS = 1`) and once with them kept
(`PooledBuilder`'s default). Every tuned build is checked against PyTorch; the tuning record gives
the seconds, tasks and measured candidates. A mode that fails is recorded with its reason.

    python benchmarks/builder.py [--models resnet18] [--trials-per-task 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from common import ResultsFile, random_model, succeeded

from dlas_dse.cache import ArtifactCache  # noqa: E402
from dlas_dse.stack.tuning import measuring  # noqa: E402
from dlas_dse.stack.compilers import BuildRequest, compile_model  # noqa: E402
from dlas_dse.stack.devices import create_device  # noqa: E402
from dlas_dse.trial import check_against_pytorch  # noqa: E402

DIRECT = {"conv": "direct", "layout": "NCHW", "format": "dense"}
MODES = {"new processes per batch (TVM's LocalBuilder)": 1,
         "processes kept (PooledBuilder)": measuring.CANDIDATES_PER_BUILD_PROCESS}


def tune_once(architecture: str, trials_per_task: int, threads: int, candidates_per_process: int) -> dict:
    """Tune ``architecture`` from an empty database; returns the tuning record and the check."""
    measuring.CANDIDATES_PER_BUILD_PROCESS = candidates_per_process
    cache_dir = Path(tempfile.mkdtemp(prefix="dlas-builder-bench-"))
    try:
        model = random_model(architecture)
        software = {"compiler": "tvm", "tuning": "metaschedule", "trials_per_task": trials_per_task,
                    "max_trials": 0, "tuning_timeout_s": 0.0}
        request = BuildRequest(model=model, model_key={"benchmark": "builder", "architecture": architecture},
                               image_shape=(3, 32, 32), batch_size=1, algorithm=DIRECT, software=software,
                               device=create_device({"device": "host-cpu", "threads": threads}))
        build = compile_model(request, ArtifactCache(cache_dir))
        images = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
        check = check_against_pytorch(build.executable, model, images, tolerance=1e-3)
        record = build.record["tuning"]
        return {"seconds": record["seconds"], "tasks": record["tasks"],
                "measured_candidates": record["measured_candidates"],
                "default_schedule_records": record.get("default_schedule_records", 0),
                "max_abs_error": check["max_abs_error"]}
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18"])
    parser.add_argument("--trials-per-task", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    results: dict = {"trials_per_task": args.trials_per_task, "models": {}}
    out = ResultsFile("builder", results, args.threads)
    for architecture in args.models:
        rows = results["models"][architecture] = {}
        for mode, candidates_per_process in MODES.items():
            row = out.attempt(rows, mode, functools.partial(tune_once, architecture, args.trials_per_task,
                                                            args.threads, candidates_per_process))
            if "failed" not in row:
                print(f"{architecture:<13} {mode:<45} {row['seconds']:7.0f} s  {row['measured_candidates']} "
                      f"candidates + {row['default_schedule_records']} default schedules over {row['tasks']} tasks",
                      flush=True)
        if len(succeeded(rows)) == len(MODES):
            new, kept = (rows[mode]["seconds"] for mode in MODES)
            rows["speedup"] = new / kept
            print(f"{architecture}: keeping the build processes tunes {new / kept:.2f}x faster", flush=True)
    print(f"saved {out.save()}")


if __name__ == "__main__":
    main()
