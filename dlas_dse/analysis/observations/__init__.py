"""The DLAS paper's kind of cross-stack findings, recomputed from one study's trials.

Each observation compares trials that differ in one layer only, or in the model and compression (every
other layer parameter equal), states whether the finding holds on this study's data, and keeps the
numbers behind the verdict.

Latency findings are decided from repeated measurements, never from single medians:

- a latency ratio between two settings is the ratio of the geometric means of their timing rounds
  (a trial's confirmed re-measurement rounds where it has them, else its own measurement's; the
  rounds of trials sharing a setting pooled), with a percentile-bootstrap interval (``RESAMPLES``
  resamples, fixed seed, so reports are deterministic) at confidence ``1 - ALPHA / m``, ``m`` the
  observation's number of comparisons (Bonferroni);
- a group shows the finding where an interval lies beyond ``MARGIN`` on the finding's side, and
  shows it absent where every interval of the group lies on the other side;
- **holds**: shown in at least ``HOLDS_SHARE`` of the groups compared (and at least one); **does not
  hold**: absent in so many groups that this share cannot be reached; otherwise **not enough data**,
  with what to run.

The package: ``frames`` (trials → cells and tables), ``verdicts`` (intervals, outcomes, verdicts),
``findings`` (one registered function per observation: a new one is one ``@observation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from dlas_dse.analysis.observations.findings import OBSERVATIONS, observation
from dlas_dse.analysis.observations.frames import completed, config_columns, with_rounds
from dlas_dse.analysis.observations.verdicts import DOES_NOT_HOLD, HOLDS, NOT_ENOUGH_DATA, RULE, Finding

REMEASURE = "python -m dlas_dse remeasure --study {study} --all"


@dataclass
class Observation:
    """A finding, its verdict on this study, and the numbers behind it (markdown lines)."""

    title: str
    verdict: str
    summary: str
    evidence: list[str] = field(default_factory=list)


def compute(frame: pd.DataFrame, study: str = "NAME") -> list[Observation]:
    """Every observation on the completed trials of ``frame`` (a ``report.detailed_frame``); a verdict that
    more timing rounds could decide says how to get them for ``study``."""
    done = completed(frame)
    if done.empty:
        return [Observation(title, NOT_ENOUGH_DATA, "no completed trial") for title in OBSERVATIONS.names()]
    done = with_rounds(done)
    emulated = done["emulated"].fillna(False).astype(bool) if "emulated" in done else pd.Series(False, done.index)
    on_device = done[~emulated]
    left_out = ([f"- {int(emulated.sum())} trial(s) on an emulated device left out: their latency is the "
                 "emulator's, not the device's"] if emulated.any() else [])
    found = []
    for title in OBSERVATIONS.names():
        finding = OBSERVATIONS.get(title).function
        if not OBSERVATIONS.trait(title, "latency"):
            found.append(_observe(title, finding(done), study))
        elif on_device.empty:
            found.append(Observation(title, NOT_ENOUGH_DATA, "every completed trial ran on an emulated device, "
                                     "whose latency is not the device's", left_out))
        else:
            observed = _observe(title, finding(on_device), study)
            observed.evidence += left_out
            found.append(observed)
    return found


def _observe(title: str, finding: Finding, study: str) -> Observation:
    """The observation of a finding, with the command that re-measures the study where it would decide."""
    advice = ([f"- to decide: `{REMEASURE.format(study=study)}` re-measures every trial in alternating timing "
               "rounds (a trial with a single median has no interval; more rounds narrow an undecided one)"]
              if finding.remeasure else [])
    return Observation(title, finding.verdict, finding.summary, finding.evidence + advice)


def to_markdown(observations: list[Observation], study_name: str) -> str:
    """``observations.md``: one section per observation with its verdict and numbers."""
    lines = [f"# Cross-stack observations: study {study_name}", "",
             "Recomputed from this study's completed trials; latencies are compared only between trials equal "
             "in every other layer parameter. " + RULE, ""]
    for item in observations:
        lines += [f"## {item.title}", "", f"**{item.verdict}**: {item.summary}", ""]
        lines += item.evidence + ([""] if item.evidence else [])
    return "\n".join(lines)


__all__ = ["DOES_NOT_HOLD", "HOLDS", "NOT_ENOUGH_DATA", "OBSERVATIONS", "Observation", "completed", "compute",
           "config_columns", "observation", "to_markdown"]
