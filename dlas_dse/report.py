"""Tables of a study's trials and its Pareto front."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

OBJECTIVE_FORMATS = {"accuracy": "{:.3f}", "latency_ms": "{:.2f}", "size_bytes": "{:,.0f}"}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, sampled parameters, objectives, trial time, failure reason."""
    objectives = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = {"trial": trial.number, "state": trial.state.name}
        row.update(trial.params)
        values = trial.values or [None] * len(objectives)
        row.update(dict(zip(objectives, values)))
        row["time_s"] = trial.user_attrs.get("time_trial_s")
        reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("excluded_by")
        row["note"] = str(reason) if reason else ""
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_frame(study: optuna.Study) -> pd.DataFrame:
    """The completed trials on the Pareto front of the study's objectives."""
    numbers = {t.number for t in study.best_trials}
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
    lines = [header, "", "trials:", format_frame(trials_frame(study))]
    if counts["COMPLETE"]:
        lines += ["", "Pareto front (" + ", ".join(
            f"{name} {d.name.lower()}" for name, d in zip(study.metric_names or [], study.directions)) + "):",
                  format_frame(pareto_frame(study))]
    else:
        lines += ["", "no completed trial yet, so no Pareto front"]
    return "\n".join(lines)
