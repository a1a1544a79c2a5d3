"""Tables of a study's trials and its Pareto front."""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
from optuna.trial import TrialState

from dlas_dse.analysis.confirmed import front_numbers, objectives_of, records

OBJECTIVE_FORMATS = {"accuracy": "{:.3f}", "latency_ms": "{:.2f}", "size_bytes": "{:,.0f}"}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, sampled parameters, objectives, trial time, failure reason."""
    objectives = objectives_of(study)
    confirmed, on_front = records(study), set(front_numbers(study))
    first_front = {t.number for t in study.best_trials} if confirmed else set()
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = {"trial": trial.number, "state": trial.state.name}
        row.update(trial.params)
        values = trial.values or [None] * len(objectives)
        row.update(dict(zip(objectives, values)))
        if confirmed:
            row["confirmed_ms"] = _interval_text(confirmed.get(trial.number))
        row["time_s"] = trial.user_attrs.get("time_trial_s")
        fell_off = trial.number in first_front and trial.number not in on_front
        row["note"] = "; ".join(_notes(trial, confirmed.get(trial.number), fell_off))
        rows.append(row)
    return pd.DataFrame(rows)


def _interval_text(record: dict | None) -> str:
    """A confirmed latency as ``median [low, high]`` (empty for a trial never re-measured)."""
    if not record:
        return ""
    low, high = record["ci_ms"]
    return f"{record['latency_ms']:.2f} [{low:.2f}, {high:.2f}]"


def _notes(trial: optuna.trial.FrozenTrial, record: dict | None, fell_off: bool) -> list[str]:
    """What a reader must know about a trial: why it failed or was excluded, a noisy measurement,
    a repeat answered from storage, a trial whose confirmed latency took it off the front."""
    attrs = trial.user_attrs
    notes = [str(reason) for reason in (attrs.get("fail_reason"), attrs.get("excluded_by")) if reason]
    if attrs.get("latency_noisy"):
        notes.append("noisy: measured on a busy machine (see latency.interference)")
    if attrs.get("emulated"):
        notes.append("emulated: latency is the emulator's, not the device's")
    if record and record.get("noisy"):
        notes.append("confirmed figure noisy")
    untunable = ((attrs.get("build") or {}).get("tuning") or {}).get("default_schedule_tasks") or {}
    if untunable:
        notes.append(f"tuning kept the default schedule of {len(untunable)} task(s) it cannot tune (e.g. sparse loops)")
    if "repeat_of" in attrs:
        notes.append(f"repeat of trial {attrs['repeat_of']}")
    if fell_off:
        notes.append("off the front once re-measured")
    return notes


PROVENANCE = ("device", "device_kind", "ran_on", "cpu_model", "macs", "parameters", "achieved_gflops", "percent_of_peak", "tuning_capped")


def detailed_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with everything a report needs: every layer parameter (fixed ones too),
    the objectives, the latency spread and timing rounds (``latency_round_ms``, ``latency_noisy``), the
    re-measurement's latency, interval and rounds (``confirmed_*``), stage times, which stages were
    reused, and provenance (device, threads used, target, measured peak, worker, library versions)."""
    objectives = objectives_of(study)
    confirmed = records(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        row = {"trial": trial.number, "state": trial.state.name}
        row.update(attrs.get("config") or trial.params)
        row.update(dict(zip(objectives, trial.values or [None] * len(objectives))))
        latency = attrs.get("latency") or {}
        row.update(latency_iqr_ms=latency.get("iqr_ms"), latency_runs=latency.get("runs"),
                   latency_round_ms=latency.get("round_ms"), latency_noisy=latency.get("noisy"),
                   threads_used=attrs.get("threads"), emulated=bool(attrs.get("emulated")),
                   achieved_sparsity=(attrs.get("compression") or {}).get("sparsity"))
        row.update(_confirmed_latency(confirmed.get(trial.number) or attrs.get("confirmed_latency") or {}))
        row.update({key: value for key, value in attrs.items() if key.startswith("time_")})
        row.update({f"reused_{stage}": hit for stage, hit in (attrs.get("cache_hits") or {}).items()})
        tuning = (attrs.get("build") or {}).get("tuning") or {}
        row.update(tuning_tasks=tuning.get("tasks"), tuning_database_hits=tuning.get("database_hits"),
                   tuning_measured_candidates=tuning.get("measured_candidates"),
                   tuning_default_tasks=len(tuning.get("default_schedule_tasks") or {}))
        row.update({key: attrs.get(key) for key in PROVENANCE})
        row.update(peak_gflops=(attrs.get("peak") or {}).get("gflops"),
                   target=json.dumps(attrs["target"], sort_keys=True) if "target" in attrs else None,
                   worker_host=(attrs.get("worker") or {}).get("host"),
                   started=trial.datetime_start, finished=trial.datetime_complete)
        row.update({f"version_{name}": version for name, version in (attrs.get("versions") or {}).items()})
        reason = attrs.get("fail_reason") or attrs.get("excluded_by")
        row["note"] = str(reason) if reason else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _confirmed_latency(confirmed: dict) -> dict:
    """The columns of a trial's re-measurement (the study's ``confirmed_latency:<n>`` record, or the trial's
    ``confirmed_latency``): latency, its interval and rounds (NaN / None for a trial never re-measured)."""
    low, high = confirmed.get("ci_ms") or (math.nan, math.nan)
    return {"confirmed_latency_ms": confirmed.get("latency_ms", math.nan),
            "confirmed_round_ms": confirmed.get("round_ms"),
            "confirmed_ci_low_ms": low, "confirmed_ci_high_ms": high}


def pareto_frame(study: optuna.Study) -> pd.DataFrame:
    """The completed trials on the Pareto front of the study's objectives, with confirmed
    latencies in place of first measurements where ``remeasure`` has them."""
    numbers = set(front_numbers(study))
    frame = trials_frame(study)
    if frame.empty:
        return frame
    return frame[frame["trial"].isin(numbers)].drop(columns=["state", "note"])


def format_frame(frame: pd.DataFrame) -> str:
    """Fixed-width text with objectives in readable units."""
    shown = frame.copy()
    for column, pattern in OBJECTIVE_FORMATS.items():
        if column in shown:
            shown[column] = shown[column].map(lambda v, p=pattern: "" if pd.isna(v) else p.format(v))
    if "time_s" in shown:
        shown["time_s"] = shown["time_s"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    shown.columns = [c.split(".", 1)[-1] for c in shown.columns]
    return shown.to_string(index=False)


def describe_study(study: optuna.Study) -> str:
    """The text `show` prints: counts by state, every trial, the Pareto front."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(1 for t in trials if t.state == state) for state in TrialState}
    header = f"study {study.study_name}: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    if not trials:
        return header + "\n(no trials yet: run `python -m dlas_dse optimize --study NAME`)"
    emulated = sum(1 for t in trials if t.user_attrs.get("emulated"))
    if emulated:
        header += (f"\n{emulated} trial(s) ran on an emulated device (QEMU): their results are real, their "
                   "latency is not the device's (left out of observations, the surrogate and remeasure)")
    lines = [header, "", "trials:", format_frame(trials_frame(study))]
    if counts["COMPLETE"]:
        confirmed = len(records(study))
        source = (f"; latency: the confirmed figure for the {confirmed} re-measured trial(s), the first "
                  "measurement for the others" if confirmed else "; latency: first measurements (run "
                  "`remeasure` to confirm them side by side)")
        lines += ["", "Pareto front (" + ", ".join(
            f"{name} {d.name.lower()}" for name, d in zip(study.metric_names or [], study.directions))
            + source + "):", format_frame(pareto_frame(study))]
    else:
        lines += ["", "no completed trial yet, so no Pareto front"]
    return "\n".join(lines)
