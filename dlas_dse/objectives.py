"""The objectives a trial measures, and which way each is better: the one definition that study
files, the study loop, the report and the observations read."""

OBJECTIVES = {"accuracy": "maximize", "latency_ms": "minimize", "size_bytes": "minimize"}
"""Top-1 accuracy on the validation images, median batch-1 latency, bytes of the deployed parameters."""
