"""Feature rows of configurations and the schema that encodes them: every layer parameter (those
of techniques not chosen are missing), plus the static descriptors; text values one-hot encoded,
numbers as they are, missing values left to XGBoost."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from dlas_dse.registry import LAYERS
from dlas_dse.space import Config
from dlas_dse.surrogate.descriptors import descriptors

FEATURE_VERSION = 2
"""Bumped whenever rows or their encoding change: a saved model with another version is refused."""


class SchemaMismatch(ValueError):
    """Configurations do not fit a trained model's feature schema (the message says how to fix it)."""


def active_parameters(config: Config) -> Config:
    """``config`` without the parameters of techniques it does not choose (e.g. the pruning
    sparsity when the compression is int8): they cannot affect the result."""
    active = {}
    for key, value in config.items():
        layer, _, name = key.partition(".")
        registry = LAYERS.get(layer)
        owners = registry.owners(name) if registry else []
        if not owners or config.get(f"{layer}.{registry.selector}") in owners:
            active[key] = value
    return active


def feature_row(config: Config, cache_dir: str) -> dict:
    """The active layer parameters of ``config`` and its static descriptors."""
    return {**active_parameters(config), **descriptors(config, cache_dir)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class FeatureSchema:
    """Which row keys a model was trained on and how each is encoded."""

    parameters: list[str]
    """The layer parameters (``layer.param``) of the training configurations."""
    numeric: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    version: int = FEATURE_VERSION

    @classmethod
    def fit(cls, rows: list[dict]) -> "FeatureSchema":
        """The schema of training ``rows``: a key is categorical when any of its values is not a number."""
        keys = sorted({key for row in rows for key in row})
        categorical = {key for key in keys if any(key in row and not _is_number(row[key]) for row in rows)}
        return cls(parameters=[k for k in keys if k.split(".", 1)[0] in LAYERS and "." in k],
                   numeric=[k for k in keys if k not in categorical],
                   categories={k: sorted({str(row[k]) for row in rows if k in row}) for k in sorted(categorical)})

    @property
    def columns(self) -> list[str]:
        """Feature names, in matrix column order."""
        return self.numeric + [f"{key}={value}" for key, values in self.categories.items() for value in values]

    def check(self, configs: list[Config]) -> None:
        """Refuse configurations naming layer parameters the model never saw."""
        unknown = sorted({key for config in configs for key in config if key not in self.parameters})
        if unknown:
            raise SchemaMismatch(f"the surrogate was trained without the parameters {', '.join(unknown)}; it knows "
                                 f"{', '.join(self.parameters)}. Retrain it on trials that vary these: "
                                 "python -m dlas_dse surrogate train --study NAME")

    def encode(self, rows: list[dict]) -> np.ndarray:
        """The feature matrix of ``rows`` (missing values NaN; unseen text values all zeros)."""
        matrix = np.full((len(rows), len(self.columns)), math.nan, dtype=np.float64)
        for index, row in enumerate(rows):
            values = [float(row[key]) if _is_number(row.get(key)) else math.nan for key in self.numeric]
            for key, known in self.categories.items():
                values += [float(str(row[key]) == value) if key in row else math.nan for value in known]
            matrix[index] = values
        return matrix

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSchema":
        """The schema saved with a model; refuses one of another feature version."""
        if data.get("version") != FEATURE_VERSION:
            raise SchemaMismatch(f"the surrogate's features are version {data.get('version')}, this dlas-dse "
                                 f"computes version {FEATURE_VERSION}; retrain it: python -m dlas_dse surrogate "
                                 "train --study NAME")
        return cls(**data)
