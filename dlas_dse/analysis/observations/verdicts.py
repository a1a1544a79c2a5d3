"""Comparisons and verdicts: latency ratios with bootstrap intervals, each group's outcome, and an
observation's verdict (holds / does not hold / not enough data) with the lines that show it."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dlas_dse.analysis.observations.frames import CONFIRMED, FIRST, RESAMPLES, SINGLE, Cell

HOLDS, DOES_NOT_HOLD, NOT_ENOUGH_DATA = "holds", "does not hold", "not enough data"
SHOWN, ABSENT, UNDECIDED, UNMEASURED = "shown", "absent", "undecided", "no rounds"
MARGIN = 1.05  # a latency ratio counts as slower/faster only beyond 5%
ALPHA = 0.05  # family-wise error rate of an observation's intervals (Bonferroni over its comparisons)
HOLDS_SHARE = 0.25  # share of the groups compared that must show a finding for it to hold
RULE = (f"Latency ratios are ratios of geometric means of timing rounds (a trial's confirmed re-measurement "
        f"where present, else its first measurement; trials of one setting pooled), each with a "
        f"{RESAMPLES}-resample percentile-bootstrap interval at confidence 1 - {ALPHA:g}/m, m the observation's "
        f"number of comparisons (Bonferroni). A group shows the finding where an interval lies beyond "
        f"x{MARGIN:g} on the finding's side, and shows it absent where all its intervals lie on the other side. "
        f"**holds**: shown in at least {HOLDS_SHARE:.0%} of the groups (and one); **does not hold**: absent in "
        f"so many that {HOLDS_SHARE:.0%} cannot be reached; otherwise **not enough data**.")


@dataclass
class Finding:
    """What one observation found: its verdict, a one-line summary, the numbers (markdown lines), and
    whether re-measuring the trials (more timing rounds) could decide it."""

    verdict: str
    summary: str
    evidence: list[str] = field(default_factory=list)
    remeasure: bool = False


# --------------------------------------------------------------------------- comparisons and verdicts

Contrast = tuple[tuple[float, Cell], ...]
"""A log latency ratio: a weighted sum of cells' mean log latencies."""


def latency_ratio(slow: Cell, fast: Cell) -> Contrast:
    """log(slow / fast): positive where ``slow`` is the slower one."""
    return (1.0, slow), (-1.0, fast)


def mean_contrast(contrasts: list[Contrast]) -> Contrast:
    """The average of several contrasts: the log of a geometric mean of ratios."""
    return tuple((weight / len(contrasts), cell) for contrast in contrasts for weight, cell in contrast)


def contrast_value(contrast: Contrast) -> float:
    """The contrast as a ratio, from the cells' latencies (single medians where they have no rounds)."""
    return math.exp(sum(weight * math.log(cell.latency_ms) for weight, cell in contrast))


@dataclass(eq=False)
class Comparison:
    """One test of a finding in one group. Its effect is the smallest of ``terms`` (ratios that must all
    exceed the margin for the finding, e.g. "X beats Y untuned" and "Y beats X tuned"); where ``above`` is
    False the finding is the effect staying below the margin (e.g. more threads not helping)."""

    label: str
    terms: tuple[Contrast, ...]
    above: bool = True

    @property
    def measured(self) -> bool:
        """Whether every cell compared has timing rounds (so the effect has an interval)."""
        return all(cell.replicates is not None for term in self.terms for _, cell in term)

    def ratio(self) -> float:
        """The effect as a ratio."""
        return min(contrast_value(term) for term in self.terms)

    def replicates(self) -> np.ndarray:
        """The effect's bootstrap replicates (log ratios)."""
        return np.min([sum(weight * cell.replicates for weight, cell in term) for term in self.terms], axis=0)


def _intervals(comparisons: list[Comparison], confidence: float, batch: int = 1000) -> list[tuple[float, float]]:
    """The percentile-bootstrap intervals of measured comparisons at ``confidence`` (computed in batches)."""
    quantiles = [(1 - confidence) / 2, (1 + confidence) / 2]
    bounds = [np.exp(np.quantile(np.stack([c.replicates() for c in comparisons[start:start + batch]]),
                                 quantiles, axis=1)).T for start in range(0, len(comparisons), batch)]
    return [(float(low), float(high)) for low, high in np.concatenate(bounds)] if bounds else []


@dataclass
class Judged:
    """A comparison with its ratio, interval (None without rounds) and outcome."""

    comparison: Comparison
    ratio: float
    interval: tuple[float, float] | None
    outcome: str

    def describe(self) -> str:
        """``x1.23 [1.10, 1.37] shown`` (without rounds: the single medians' ratio, no interval)."""
        if self.interval is None:
            return f"x{self.ratio:.2f} from single medians (no rounds, no interval)"
        return f"x{self.ratio:.2f} [{self.interval[0]:.2f}, {self.interval[1]:.2f}] {self.outcome}"


def _outcome(above: bool, interval: tuple[float, float] | None) -> str:
    """Shown where the interval lies beyond the margin on the finding's side, absent on the other side."""
    if interval is None:
        return UNMEASURED
    if interval[0] > MARGIN:
        return SHOWN if above else ABSENT
    if interval[1] < MARGIN:
        return ABSENT if above else SHOWN
    return UNDECIDED


def _group_outcome(outcomes: list[str]) -> str:
    """A group shows the finding if one of its comparisons does, and shows it absent if all do."""
    if SHOWN in outcomes:
        return SHOWN
    if all(outcome == ABSENT for outcome in outcomes):
        return ABSENT
    return UNMEASURED if UNMEASURED in outcomes else UNDECIDED


@dataclass
class Judgement:
    """Every comparison of an observation judged at one corrected confidence, grouped; and the verdict."""

    confidence: float
    comparisons: int
    groups: dict[str, list[Judged]]

    def outcome(self, group: str) -> str:
        """The group's outcome (see ``_group_outcome``)."""
        return _group_outcome([judged.outcome for judged in self.groups[group]])

    def count(self, outcome: str) -> int:
        """How many groups have ``outcome``."""
        return sum(self.outcome(group) == outcome for group in self.groups)

    @property
    def need(self) -> int:
        """Groups that must show the finding for it to hold."""
        return max(1, math.ceil(HOLDS_SHARE * len(self.groups)))

    @property
    def verdict(self) -> str:
        """Holds, does not hold (the share can no longer be reached), or not enough data."""
        if self.count(SHOWN) >= self.need:
            return HOLDS
        return DOES_NOT_HOLD if len(self.groups) - self.count(ABSENT) < self.need else NOT_ENOUGH_DATA


def judge(groups: dict[str, list[Comparison]]) -> Judgement:
    """Intervals at confidence 1 - ALPHA/m (m: the comparisons with rounds) and each one's outcome."""
    measured = [c for comparisons in groups.values() for c in comparisons if c.measured]
    confidence = 1 - ALPHA / max(len(measured), 1)
    intervals = dict(zip(map(id, measured), _intervals(measured, confidence)))

    def judged(comparison: Comparison) -> Judged:
        interval = intervals.get(id(comparison))
        return Judged(comparison, comparison.ratio(), interval, _outcome(comparison.above, interval))

    return Judgement(confidence, len(measured), {group: [judged(c) for c in comparisons]
                                                 for group, comparisons in groups.items()})


def finding_of(judgement: Judgement, claim: str, noun: str, lines: list[str]) -> Finding:
    """The judgement's verdict, a summary with its counts, the confidence and figures used, then ``lines``."""
    summary = (f"{claim} in {judgement.count(SHOWN)} of {len(judgement.groups)} {noun} (holds from "
               f"{judgement.need}, {HOLDS_SHARE:.0%}); absent in {judgement.count(ABSENT)}, undecided in "
               f"{judgement.count(UNDECIDED)}, without timing rounds in {judgement.count(UNMEASURED)}")
    confidence = (f"- intervals: {100 * judgement.confidence:.6g}% ({100 * (1 - ALPHA):g}% Bonferroni-corrected "
                  f"over {judgement.comparisons} comparisons), {RESAMPLES} bootstrap resamples, margin x{MARGIN:g}"
                  if judgement.comparisons else "- intervals: none (no comparison has timing rounds)")
    return Finding(judgement.verdict, summary, [confidence, _figures_line(judgement), *lines],
                   remeasure=judgement.verdict == NOT_ENOUGH_DATA)


def _figures_line(judgement: Judgement) -> str:
    """Which figures the compared trials contributed: confirmed, first measurement, single median."""
    figures = {trial: figure for judged in (j for group in judgement.groups.values() for j in group)
               for term in judged.comparison.terms for _, cell in term
               for trial, figure in zip(cell.trials, cell.figures)}
    counts = Counter(figures.values())
    return "- figures used: " + ", ".join(f"{kind} for {counts[kind]} trials" for kind in (CONFIRMED, FIRST, SINGLE)
                                           if counts[kind])


def group_line(group: str, judged: list[Judged]) -> str:
    """A group's outcome, how many of its comparisons show the finding, and the strongest one."""
    strongest = max(judged, key=lambda j: (j.interval is not None, j.interval[0] if j.interval else j.ratio))
    shown = sum(j.outcome == SHOWN for j in judged)
    return (f"- {group}: {_group_outcome([j.outcome for j in judged])} ({shown} of {len(judged)} comparisons); "
            f"strongest: {strongest.comparison.label}: {strongest.describe()}")
