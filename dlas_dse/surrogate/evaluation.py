"""Honest evaluation of the surrogate: every number comes from predictions of trials the model was
not trained on (random k-fold, leave-one-model-out, leave-one-hardware-out)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from scipy.stats import kendalltau
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from dlas_dse.analysis.plots import predicted_vs_measured_png
from dlas_dse.surrogate.data import Measured
from dlas_dse.surrogate.model import LatencySurrogate

GROUPED_SPLITS = {"leave-one-model-out": "model.architecture", "leave-one-hardware-out": "hardware.device"}


def folds(measured: Measured, split: str, k: int = 5) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(held-out name, training rows, held-out rows) of ``split``: ``k-fold`` or a grouped split
    (each value of the grouping parameter held out in turn)."""
    rows = np.arange(len(measured))
    if split == "k-fold":
        for number, (train, test) in enumerate(KFold(min(k, len(rows)), shuffle=True, random_state=0).split(rows)):
            yield f"fold {number + 1}", train, test
        return
    groups = np.array([str(value) for value in measured.values(GROUPED_SPLITS[split])])
    for group in sorted(set(groups)):
        yield group, rows[groups != group], rows[groups == group]


def applicable_splits(measured: Measured) -> dict[str, str]:
    """Each split and, when it cannot be computed, why (empty string: it can)."""
    reasons = {"k-fold": "" if len(measured) >= 4 else f"only {len(measured)} trials (needs 4)"}
    for split, parameter in GROUPED_SPLITS.items():
        count = len({str(value) for value in measured.values(parameter)})
        reasons[split] = "" if count >= 2 else f"one {parameter.split('.')[1]} only ({count} value)"
    return reasons


def held_out_predictions(measured: Measured, split: str, cache_dir: str, k: int = 5) -> pd.DataFrame:
    """One row per trial: its measured latency and the latency predicted by a model trained
    without it (``held_out`` names the fold or the group it was held out with)."""
    rows = []
    for name, train, test in folds(measured, split, k):
        training = measured.subset(train)
        model = LatencySurrogate.train(training.configs, training.latencies_ms, cache_dir)
        held_out = measured.subset(test)
        predicted = model.predict(held_out.configs, cache_dir)
        rows += [{"trial": origin, "held_out": name, "measured_ms": real, "predicted_ms": guess}
                 for origin, real, guess in zip(held_out.origins, held_out.latencies_ms, predicted)]
    return pd.DataFrame(rows)


def metrics(predictions: pd.DataFrame) -> dict:
    """MAPE (%), share within ±10% and ±20%, Kendall τ and R² of log latency, over held-out rows."""
    measured, predicted = predictions["measured_ms"].to_numpy(), predictions["predicted_ms"].to_numpy()
    relative = np.abs(predicted - measured) / measured
    tau = kendalltau(measured, predicted).statistic if len(measured) > 1 else float("nan")
    return {"held_out_trials": len(measured), "mape_percent": 100 * relative.mean(),
            "within_10_percent": float((relative <= 0.10).mean()), "within_20_percent": float((relative <= 0.20).mean()),
            "kendall_tau": float(tau), "r2_log_latency": float(r2_score(np.log(measured), np.log(predicted)))
            if len(measured) > 1 else float("nan")}


def evaluate(measured: Measured, cache_dir: str, directory: Path, k: int = 5) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run every applicable split; write ``predictions_<split>.csv``, ``predicted_vs_measured_<split>.png``
    and ``metrics.csv`` to ``directory``. Returns the metrics (one row per split) and the skipped
    splits with the reason."""
    directory.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], {}
    for split, reason in applicable_splits(measured).items():
        if reason:
            skipped[split] = reason
            continue
        predictions = held_out_predictions(measured, split, cache_dir, k)
        predictions.to_csv(directory / f"predictions_{split}.csv", index=False)
        summary = metrics(predictions)
        predicted_vs_measured_png(predictions, f"{split}: MAPE {summary['mape_percent']:.1f}%, "
                                  f"{summary['within_10_percent']:.0%} within ±10%, τ {summary['kendall_tau']:.2f}",
                                  directory / f"predicted_vs_measured_{split}.png")
        rows.append({"split": split, **summary})
    table = pd.DataFrame(rows)
    table.to_csv(directory / "metrics.csv", index=False)
    return table, skipped
