"""The XGBoost latency surrogate: features of a configuration, the model, its honest evaluation,
and surrogate-assisted search."""
