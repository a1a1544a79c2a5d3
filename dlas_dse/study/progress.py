"""The progress bar of a study: the trial budget, the current trial, its stage and elapsed time."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from dlas_dse.trial import STAGES, use_thread_lock_for_progress_bars


class Progress:
    """A progress bar over the trial budget showing the current trial, its stage and elapsed time."""

    def __init__(self, total: int, done: int, enabled: bool):
        use_thread_lock_for_progress_bars()
        self.bar = tqdm(total=total, initial=min(done, total), unit="trial", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True)
        self.trial_started = time.monotonic()
        self.label = ""

    def start(self, number: int, config: dict) -> None:
        """Show trial ``number`` (of ``config``) as starting."""
        self.trial_started = time.monotonic()
        self.label = f"#{number} {config.get('model.architecture', '')}"
        self.stage("starting")

    def stage(self, name: str) -> None:
        """Show the current trial in stage ``name``."""
        step = f"{STAGES.index(name) + 1}/{len(STAGES)} " if name in STAGES else ""
        self.bar.set_postfix_str(f"{self.label} {step}{name} {time.monotonic() - self.trial_started:.0f}s")

    def finish(self, line: str, counted: int) -> None:
        """Print ``line`` above the bar and move the bar to ``counted`` finished trials."""
        self.bar.write(line)
        self.bar.n = min(counted, self.bar.total)
        self.bar.refresh()


def summary(values: dict) -> str:
    """A trial's objectives in readable units, on one line."""
    return (f"accuracy {values['accuracy']:.3f}, latency {values['latency_ms']:.2f} ms, "
            f"size {values['size_bytes'] / 1e6:.2f} MB")
