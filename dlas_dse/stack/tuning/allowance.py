"""What tuning may spend: one build's budget, and a study's cap summed over its trials."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TuningBudget:
    """How much measuring one build may spend: trials per task, a cap over all tasks (0: none
    beyond trials per task), and a time limit in seconds (0: none)."""

    trials_per_task: int
    max_trials: int = 0
    timeout_s: float = 0.0


@dataclass(frozen=True)
class TuningAllowance:
    """A study's cap on auto-tuning seconds summed over its trials (None: no cap), and what its
    finished trials have spent of it."""

    max_total_s: float | None = None
    spent_s: float = 0.0

    def apply(self, software: dict) -> tuple[dict, bool, bool]:
        """One trial's software parameters under the cap: the parameters (the tuning timeout lowered
        to what is left), whether the trial may tune, and whether the cap limited it."""
        if software.get("tuning") != "metaschedule" or self.max_total_s is None:
            return software, True, False
        left = self.max_total_s - self.spent_s
        if left <= 0:
            return software, False, True
        timeout = software["tuning_timeout_s"]
        if timeout and timeout <= left:
            return software, True, False
        return {**software, "tuning_timeout_s": left}, True, True
