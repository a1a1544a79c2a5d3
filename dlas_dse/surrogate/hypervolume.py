"""Exact hypervolume of a set of points to be minimised (any dimension; fast enough for the fronts
of a study: tens of points in three objectives)."""

from __future__ import annotations

import numpy as np


def non_dominated(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` that no other row weakly dominates (duplicates kept once)."""
    points = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    keep = [i for i, p in enumerate(points)
            if not np.any(np.all(points <= p, axis=1) & np.any(points < p, axis=1))]
    return points[keep]


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` (minimisation) and bounded by ``reference``."""
    reference = np.asarray(reference, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64).reshape(-1, len(reference))
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    points = non_dominated(points)
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    # slice along the last objective: between consecutive values, the (d-1)-dimensional volume of
    # every point at or below the slice
    order = np.argsort(points[:, -1])
    points = points[order]
    levels = np.append(points[:, -1], reference[-1])
    volume = 0.0
    for index in range(len(points)):
        height = levels[index + 1] - levels[index]
        if height > 0:
            volume += height * hypervolume(points[:index + 1, :-1], reference[:-1])
    return float(volume)


def objective_space(accuracy, latency_ms, size_bytes) -> np.ndarray:
    """(-accuracy, log latency, log size): the study's three objectives as a space to minimise,
    with the logs making a factor of two count the same at any scale."""
    return np.column_stack([-np.asarray(accuracy, dtype=np.float64), np.log(latency_ms), np.log(size_bytes)])
