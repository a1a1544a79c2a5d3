"""Confirmed latencies (written by ``remeasure``) and the Pareto front they give, without TVM.

A study keeps each re-measured trial's record in the study user attribute
``confirmed_latency:<trial number>``; wherever a record exists, its latency replaces the trial's
first measurement in the front, ``show``, the report and its plots.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

ATTRIBUTE = "confirmed_latency:"
"""Prefix of the study user attribute holding one trial's confirmed latency."""
LATENCY = "latency_ms"


def records(study: optuna.Study) -> dict[int, dict]:
    """Confirmed-latency records of the study, by trial number."""
    return {int(key[len(ATTRIBUTE):]): value for key, value in study.user_attrs.items() if key.startswith(ATTRIBUTE)}


def _dominates(a: list[float], b: list[float], directions: list[str], latency: int | None, margin: float) -> bool:
    """Whether objective values ``a`` dominate ``b``; ``a``'s latency must beat ``b``'s by ``margin``."""
    better = False
    for index, (x, y, direction) in enumerate(zip(a, b, directions)):
        if direction == "maximize":
            x, y = -x, -y
        if index == latency:
            y = y * (1 - margin)
        if x > y:
            return False
        better = better or x < y
    return better


def front(values: dict[int, list[float]], directions: list[str], latency: int | None,
          margin: float = 0.0) -> list[int]:
    """Trial numbers no other trial dominates (with ``margin``: none beats by more than it on latency)."""
    return [n for n, v in values.items()
            if not any(_dominates(w, v, directions, latency, margin) for m, w in values.items() if m != n)]


def objective_values(trials: list[FrozenTrial], confirmed: dict[int, dict],
                     objectives: list[str]) -> dict[int, list[float]]:
    """Each trial's objective values, its confirmed latency in place of the first one where present."""
    latency = objectives.index(LATENCY) if LATENCY in objectives else None
    values = {}
    for trial in trials:
        row = list(trial.values)
        if latency is not None and confirmed.get(trial.number, {}).get("latency_ms") is not None:
            row[latency] = confirmed[trial.number]["latency_ms"]
        values[trial.number] = row
    return values


def objectives_of(study: optuna.Study) -> list[str]:
    """The study's objective names."""
    return study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]


def front_numbers(study: optuna.Study, margin: float = 0.0) -> list[int]:
    """The Pareto front of the completed, measured trials, with confirmed latencies where present."""
    objectives = objectives_of(study)
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if "repeat_of" not in t.user_attrs]
    latency = objectives.index(LATENCY) if LATENCY in objectives else None
    return front(objective_values(trials, records(study), objectives),
                 [d.name.lower() for d in study.directions], latency, margin)
