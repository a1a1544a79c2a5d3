"""The latency surrogate: XGBoost regression on a configuration's features, saved in XGBoost's JSON
format with its feature schema, library versions and training studies.

The regression target is log(latency / executed MACs), the time per executed multiply-accumulate:
the static MAC count carries the first-order scale, so the trees learn how efficiently each
combination of layers runs, which transfers to models (and sizes) they never saw; the predicted
latency is that time per MAC times the configuration's executed MACs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import xgboost

from dlas_dse.space import Config
from dlas_dse.surrogate.features import FeatureSchema, SchemaMismatch, active_parameters, feature_row

METADATA_ATTRIBUTE = "dlas_dse"
"""The booster attribute holding the schema, versions and training studies."""
HYPERPARAMETERS = {"n_estimators": 400, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8,
                   "colsample_bytree": 0.8, "min_child_weight": 1.0, "random_state": 0, "n_jobs": 1}


def _log_macs(rows: list[dict]) -> np.ndarray:
    return np.array([row["log_executed_macs"] for row in rows])


def _versions() -> dict:
    return {name: metadata.version(name) for name in ("xgboost", "dlas-dse", "optuna")}


@dataclass
class LatencySurrogate:
    """Predicts latency (ms) from configurations; trained on measured trials."""

    schema: FeatureSchema
    regressor: xgboost.XGBRegressor
    studies: list[str] = field(default_factory=list)
    trained_on: int = 0
    versions: dict = field(default_factory=_versions)

    @classmethod
    def train(cls, configs: list[Config], latencies_ms: list[float], cache_dir: str,
              studies: list[str] = ()) -> "LatencySurrogate":
        """Fit on measured ``configs`` and their latencies (the target is log latency)."""
        if len(configs) < 2:
            raise ValueError(f"a surrogate needs at least 2 measured trials, got {len(configs)}")
        rows = [feature_row(config, cache_dir) for config in configs]
        schema = FeatureSchema.fit(rows)
        regressor = xgboost.XGBRegressor(**HYPERPARAMETERS)
        regressor.fit(schema.encode(rows), np.log(np.asarray(latencies_ms, dtype=np.float64)) - _log_macs(rows))
        return cls(schema, regressor, list(studies), len(configs))

    def predict(self, configs: list[Config], cache_dir: str) -> np.ndarray:
        """Predicted latency (ms) of each configuration, without building or measuring it."""
        self.schema.check([active_parameters(config) for config in configs])
        rows = [feature_row(config, cache_dir) for config in configs]
        return np.exp(self.regressor.predict(self.schema.encode(rows)) + _log_macs(rows))

    def save(self, path: Path) -> Path:
        """Write the model as XGBoost JSON; the schema, versions and studies ride in an attribute."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.regressor.get_booster().set_attr(**{METADATA_ATTRIBUTE: json.dumps(
            {"schema": self.schema.to_dict(), "studies": self.studies, "trained_on": self.trained_on,
             "versions": self.versions, "target": "log(latency_ms) - log_executed_macs"})})
        self.regressor.save_model(path)
        return path

    @classmethod
    def load(cls, path: Path) -> "LatencySurrogate":
        """A model written by :meth:`save`; refuses files without a dlas-dse schema or of another
        feature version, or written by another XGBoost major version."""
        if not path.is_file():
            raise FileNotFoundError(f"no surrogate at {path}; train one: python -m dlas_dse surrogate train "
                                    "--study NAME")
        regressor = xgboost.XGBRegressor()
        regressor.load_model(path)
        saved = regressor.get_booster().attr(METADATA_ATTRIBUTE)
        if saved is None:
            raise SchemaMismatch(f"{path} is an XGBoost model without a dlas-dse feature schema; train one with "
                                 "python -m dlas_dse surrogate train --study NAME")
        saved = json.loads(saved)
        trained_with, running = saved["versions"]["xgboost"], xgboost.__version__
        if trained_with.split(".")[0] != running.split(".")[0]:
            raise SchemaMismatch(f"{path} was trained with XGBoost {trained_with}, this is {running}; retrain it")
        return cls(FeatureSchema.from_dict(saved["schema"]), regressor, saved["studies"], saved["trained_on"],
                   saved["versions"])


def describe(surrogate: LatencySurrogate) -> str:
    """One line: what the model was trained on."""
    return (f"XGBoost latency surrogate: {surrogate.trained_on} trials of {', '.join(surrogate.studies) or '?'}, "
            f"{len(surrogate.schema.columns)} features, xgboost {surrogate.versions.get('xgboost')}")

