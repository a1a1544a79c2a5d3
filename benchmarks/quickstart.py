"""Wall time of the quickstart study split by stage, from a cold cache.

Runs ``python -m dlas_dse optimize --study quickstart`` with a fresh storage and artifact cache,
then reads every trial's stage times from storage. Framework overhead is everything that is not
a stage (process start, storage writes, sampling, IPC); the target is < 5% of a trial's wall time.

    python benchmarks/quickstart.py [--study quickstart] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlas_dse.config import load_study  # noqa: E402
from dlas_dse.stack.devices import cpu_model  # noqa: E402
from dlas_dse.study.opening import open_storage  # noqa: E402
from dlas_dse.trial import STAGES  # noqa: E402


def run(study_name: str, workdir: Path) -> dict:
    storage = f"sqlite:///{workdir / 'study.db'}"
    env = {**os.environ, "DLAS_CACHE_DIR": str(workdir / "cache")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlas_dse", "optimize", "--study", study_name,
                    "--storage", storage, "--no-progress"], cwd=ROOT, env=env, check=True)
    study_wall = time.perf_counter() - started
    study = optuna.load_study(study_name=load_study(study_name).name, storage=open_storage(storage))
    trials = []
    for trial in study.get_trials():
        attrs = trial.user_attrs
        row = {"number": trial.number, "state": trial.state.name, "params": trial.params,
               "wall_s": attrs.get("time_trial_s"), "framework_s": attrs.get("time_framework_s"),
               "worker_start_s": attrs.get("time_worker_start_s"),
               "cache_hits": attrs.get("cache_hits")}
        row.update({stage: attrs.get(f"time_{stage}_s") for stage in STAGES})
        trials.append(row)
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    trial_wall = sum(t["wall_s"] for t in complete)
    totals = {stage: sum(t[stage] for t in complete) for stage in STAGES}
    totals["framework_in_trials"] = sum(t["framework_s"] for t in complete)
    totals["worker_start_once"] = sum(t["worker_start_s"] for t in complete)
    totals["study_outside_trials"] = study_wall - trial_wall
    overhead_shares = [t["framework_s"] / t["wall_s"] for t in complete]
    overhead = totals["framework_in_trials"] + totals["worker_start_once"] + totals["study_outside_trials"]
    return {"study": study_name, "study_wall_s": study_wall, "trials": trials, "totals_s": totals,
            "framework_share_of_trial_wall": totals["framework_in_trials"] / trial_wall,
            "framework_share_per_trial": {"min": min(overhead_shares), "max": max(overhead_shares)},
            "all_overhead_share_of_study_wall": overhead / study_wall,
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="quickstart")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.keep or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(args.study, workdir)
    out = ROOT / "benchmarks" / "results" / f"{args.study}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\n{args.study}: study wall {result['study_wall_s']:.1f} s on {result['machine']['cpu']}")
    print(f"{'stage':<22}{'seconds':>10}{'share':>9}")
    for stage, seconds in result["totals_s"].items():
        print(f"{stage:<22}{seconds:>10.1f}{seconds / result['study_wall_s']:>9.1%}")
    print(f"framework overhead inside trials: {result['framework_share_of_trial_wall']:.2%} of trial wall "
          f"time (per trial {result['framework_share_per_trial']['min']:.1%} .. "
          f"{result['framework_share_per_trial']['max']:.1%}); with the one-time worker start-up and the "
          f"study's own start: {result['all_overhead_share_of_study_wall']:.1%} of the study; "
          f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
