"""Training data of the surrogate: the completed trials of one or more studies."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import TrialState

from dlas_dse.space import Config

LATENCY = "latency_ms"


@dataclass
class Measured:
    """Measured configurations: each trial's whole configuration and its latency."""

    configs: list[Config] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    """``study#trial`` of each row."""
    studies: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.configs)

    def subset(self, index: np.ndarray) -> "Measured":
        """The rows at ``index``."""
        return Measured([self.configs[i] for i in index], [self.latencies_ms[i] for i in index],
                        [self.origins[i] for i in index], self.studies)

    def values(self, parameter: str) -> list:
        """Each row's value of ``parameter`` (None where absent)."""
        return [config.get(parameter) for config in self.configs]


def measured_trials(studies: list[optuna.Study]) -> Measured:
    """The completed trials of ``studies`` that measured a latency on the device itself (not emulated)."""
    measured = Measured(studies=[study.study_name for study in studies])
    for study in studies:
        if LATENCY not in (study.metric_names or []):
            continue
        position = study.metric_names.index(LATENCY)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            config = trial.user_attrs.get("config")
            latency = trial.values[position]
            if config and latency and latency > 0 and not trial.user_attrs.get("emulated"):
                measured.configs.append(config)
                measured.latencies_ms.append(float(latency))
                measured.origins.append(f"{study.study_name}#{trial.number}")
    return measured
