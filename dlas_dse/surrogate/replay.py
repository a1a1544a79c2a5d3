"""Compare search strategies on an exhaustively measured grid: a sampler proposes configurations of
the grid's space, each proposal is answered with the real measurements the grid study stored for
it (nothing is re-measured), and the hypervolume of what was found is tracked against the grid's
whole front."""

from __future__ import annotations


import numpy as np
import optuna
from optuna.trial import TrialState

from dlas_dse.space import SearchSpace, config_key
from dlas_dse.surrogate.hypervolume import hypervolume, objective_space

OBJECTIVES = ("accuracy", "latency_ms", "size_bytes")


class MeasuredGrid:
    """Every completed configuration of a grid study with its measured objectives."""

    def __init__(self, study: optuna.Study):
        self.values: dict[str, tuple[float, ...]] = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            named = dict(zip(study.metric_names, trial.values))
            self.values[config_key(trial.user_attrs["config"])] = tuple(named[name] for name in OBJECTIVES)
        points = self.points(list(self.values.values()))
        self.reference = points.max(axis=0) + 0.05 * (points.max(axis=0) - points.min(axis=0)) + 1e-9
        self.hypervolume = hypervolume(points, self.reference)

    @staticmethod
    def points(values: list[tuple[float, ...]]) -> np.ndarray:
        return objective_space(*zip(*values)) if values else np.empty((0, len(OBJECTIVES)))

    def share(self, found: list[tuple[float, ...]]) -> float:
        """Hypervolume of ``found`` as a share of the whole grid's."""
        return hypervolume(self.points(found), self.reference) / self.hypervolume


def replay(grid: MeasuredGrid, space: SearchSpace, sampler: optuna.samplers.BaseSampler,
           measured_trials: int) -> list[float]:
    """Run ``sampler`` for ``measured_trials`` answered proposals; returns the share of the grid's
    hypervolume reached after each. Proposals the space's constraints exclude, or that the grid did
    not measure, are skipped without counting (a real study excludes them before measuring)."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    study.set_metric_names(list(OBJECTIVES))
    found: list[tuple[float, ...]] = []
    shares: list[float] = []
    for _ in range(50 * measured_trials):
        if len(shares) == measured_trials:
            break
        trial = study.ask()
        config = space.sample(trial)
        trial.set_user_attr("config", config)
        values = grid.values.get(config_key(config)) if not space.violations(config) else None
        if values is None:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        study.tell(trial, list(values))
        found.append(values)
        shares.append(grid.share(found))
    return shares


def trials_to_reach(shares: list[float], target: float) -> int | None:
    """Measured trials until the share first reaches ``target`` (None if it never does)."""
    return next((index + 1 for index, share in enumerate(shares) if share >= target), None)
