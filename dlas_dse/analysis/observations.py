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
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations, permutations
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from dlas_dse.objectives import OBJECTIVES

HOLDS, DOES_NOT_HOLD, NOT_ENOUGH_DATA = "holds", "does not hold", "not enough data"
SHOWN, ABSENT, UNDECIDED, UNMEASURED = "shown", "absent", "undecided", "no rounds"
LAYERS = ("dataset", "model", "compression", "algorithm", "software", "hardware")
MARGIN = 1.05  # a latency ratio counts as slower/faster only beyond 5%
ALPHA = 0.05  # family-wise error rate of an observation's intervals (Bonferroni over its comparisons)
HOLDS_SHARE = 0.25  # share of the groups compared that must show a finding for it to hold
RESAMPLES, SEED = 2000, 0  # percentile bootstrap
MIN_ROUNDS = 3  # fewer pooled timing rounds give no interval
FIRST, CONFIRMED, SINGLE = "first measurement", "confirmed re-measurement", "single median only"
REMEASURE = "python -m dlas_dse remeasure --study {study} --all"
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


OBSERVATIONS: dict[str, Callable[[pd.DataFrame], Finding]] = {}
WITHOUT_LATENCY: set[str] = set()
"""Observations that use no latency: emulated trials (latency not the device's) count there too."""


def observation(title: str, latency: bool = True) -> Callable:
    """Register a finding function under the observation's title (the report runs them in order);
    ``latency=False``: it reads no latency, so emulated trials are not left out of it."""

    def register(finding: Callable[[pd.DataFrame], Finding]) -> Callable[[pd.DataFrame], Finding]:
        OBSERVATIONS[title] = finding
        if not latency:
            WITHOUT_LATENCY.add(title)
        return finding

    return register


@dataclass
class Observation:
    """A finding, its verdict on this study, and the numbers behind it (markdown lines)."""

    title: str
    verdict: str
    summary: str
    evidence: list[str] = field(default_factory=list)


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    """The completed trials, with a ``platform`` column (device and threads used)."""
    done = frame[frame["state"] == "COMPLETE"].copy()
    if done.empty:
        return done
    threads = done["threads_used"].map(lambda t: "" if pd.isna(t) else f", {int(t)} thread" + "s" * (t != 1))
    done["platform"] = done["hardware.device"].astype(str) + threads
    return done


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The layer-parameter columns (``layer.param``), in DLAS layer order."""
    return sorted((c for c in frame.columns if c.split(".", 1)[0] in LAYERS),
                  key=lambda c: (LAYERS.index(c.split(".", 1)[0]), c))


# --------------------------------------------------------------------------- timing rounds

def _round_array(value) -> np.ndarray | None:
    """Timing rounds (ms) as an array of their positive finite values; None when there are none."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        return None
    rounds = np.asarray(value, dtype=float)
    rounds = rounds[np.isfinite(rounds) & (rounds > 0)]
    return rounds if rounds.size else None


def with_rounds(done: pd.DataFrame) -> pd.DataFrame:
    """``done`` with each trial's ``rounds`` (the confirmed re-measurement's where present, else its own
    measurement's; None for a trial with a single median only) and ``figures`` (which of these)."""
    def rounds_of(column: str) -> list:
        return list(done[column].map(_round_array)) if column in done else [None] * len(done)

    chosen = [(confirmed, CONFIRMED) if confirmed is not None else (first, FIRST) if first is not None
              else (None, SINGLE)
              for confirmed, first in zip(rounds_of("confirmed_round_ms"), rounds_of("latency_round_ms"))]
    return done.assign(rounds=pd.Series([r for r, _ in chosen], index=done.index, dtype=object),
                       figures=[figures for _, figures in chosen])


MODEL_LAYERS = ("model.", "compression.")  # the layers that decide a deployed model's size and accuracy


@dataclass(eq=False)
class Cell:
    """The trials of one setting in one group: their figures and median objectives, the mean log latency
    of their pooled timing rounds and its bootstrap replicates (both None with fewer than ``MIN_ROUNDS``
    rounds)."""

    trials: tuple[int, ...]
    figures: tuple[str, ...]
    medians: dict[str, float]
    log_mean: float | None
    replicates: np.ndarray | None

    @property
    def latency_ms(self) -> float:
        """The geometric mean of the rounds; without rounds, the trials' median latency."""
        return math.exp(self.log_mean) if self.log_mean is not None else self.medians["latency_ms"]

    @property
    def name(self) -> str:
        """``trial 3`` or ``trials 3, 7``."""
        return f"trial{'s' * (len(self.trials) > 1)} {', '.join(map(str, self.trials))}"


def _cell(rows: pd.DataFrame, rng: np.random.Generator) -> Cell:
    """Pool the timing rounds of ``rows`` (the trials of one setting) and draw their bootstrap replicates."""
    pooled = [rounds for rounds in rows["rounds"] if rounds is not None]
    logs = np.log(np.concatenate(pooled)) if pooled else np.empty(0)
    measured = logs.size >= MIN_ROUNDS
    replicates = logs[rng.integers(0, logs.size, (RESAMPLES, logs.size))].mean(axis=1) if measured else None
    return Cell(tuple(rows["trial"]), tuple(rows["figures"]),
                {c: float(rows[c].median()) for c in OBJECTIVES if c in rows},
                float(logs.mean()) if measured else None, replicates)


def _cells_by(frame: pd.DataFrame, keys: list[str], extra: tuple[str, ...] = ()) -> pd.Series:
    """A Cell per group of trials equal in ``keys`` (layer parameters, compared as text) and ``extra``
    (as they are), indexed by those values; replicates come from one fixed-seed generator in key order."""
    rng = np.random.default_rng(SEED)
    keyed = frame.assign(**{k: frame[k].map(_text) for k in keys})
    names = [*keys, *extra]
    groups = list(keyed.groupby(names, sort=True))
    index = pd.MultiIndex.from_tuples([key for key, _ in groups], names=names)
    return pd.Series([_cell(rows, rng) for _, rows in groups], index=index, dtype=object)


def _table(frame: pd.DataFrame, varying: str, also_varying: tuple[str, ...] = ()) -> pd.DataFrame:
    """A Cell per setting of ``varying`` (columns) for each group of trials equal in every other layer
    parameter (rows); groups where only one setting was measured are dropped."""
    ignored = {varying, *also_varying}
    keys = [c for c in config_columns(frame) if c not in ignored]
    if varying not in frame or frame[varying].nunique() < 2:
        return pd.DataFrame()
    table = _cells_by(frame, keys, (varying,)).unstack(varying)
    return table[table.notna().sum(axis=1) >= 2]


def _model_settings(frame: pd.DataFrame) -> dict[str, list[Cell]]:
    """The Cell of each configuration (every layer parameter and the platform equal), grouped by setting:
    equal in every layer parameter but the model and compression ones, and measured on one platform."""
    cells = _cells_by(frame, config_columns(frame), ("platform",))
    within = [n for n in cells.index.names if not n.startswith((*MODEL_LAYERS, "hardware."))]
    shown = [n for n in _distinguishing(cells) if n in within]
    return {_label(key, within, shown): list(part) for key, part in cells.groupby(level=within)}


def _text(value) -> str:
    """A parameter value as a group key: ``-`` when absent, ``2`` rather than ``2.0``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# --------------------------------------------------------------------------- comparisons and verdicts

Contrast = tuple[tuple[float, Cell], ...]
"""A log latency ratio: a weighted sum of cells' mean log latencies."""


def _ratio(slow: Cell, fast: Cell) -> Contrast:
    """log(slow / fast): positive where ``slow`` is the slower one."""
    return (1.0, slow), (-1.0, fast)


def _mean(contrasts: list[Contrast]) -> Contrast:
    """The average of several contrasts: the log of a geometric mean of ratios."""
    return tuple((weight / len(contrasts), cell) for contrast in contrasts for weight, cell in contrast)


def _value(contrast: Contrast) -> float:
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
        return min(_value(term) for term in self.terms)

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


def _judge(groups: dict[str, list[Comparison]]) -> Judgement:
    """Intervals at confidence 1 - ALPHA/m (m: the comparisons with rounds) and each one's outcome."""
    measured = [c for comparisons in groups.values() for c in comparisons if c.measured]
    confidence = 1 - ALPHA / max(len(measured), 1)
    intervals = dict(zip(map(id, measured), _intervals(measured, confidence)))

    def judged(comparison: Comparison) -> Judged:
        interval = intervals.get(id(comparison))
        return Judged(comparison, comparison.ratio(), interval, _outcome(comparison.above, interval))

    return Judgement(confidence, len(measured), {group: [judged(c) for c in comparisons]
                                                 for group, comparisons in groups.items()})


def _finding(judgement: Judgement, claim: str, noun: str, lines: list[str]) -> Finding:
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


def _group_line(group: str, judged: list[Judged]) -> str:
    """A group's outcome, how many of its comparisons show the finding, and the strongest one."""
    strongest = max(judged, key=lambda j: (j.interval is not None, j.interval[0] if j.interval else j.ratio))
    shown = sum(j.outcome == SHOWN for j in judged)
    return (f"- {group}: {_group_outcome([j.outcome for j in judged])} ({shown} of {len(judged)} comparisons); "
            f"strongest: {strongest.comparison.label}: {strongest.describe()}")


def _label(index, names: list[str], shown: list[str]) -> str:
    """``param=value`` for the parameters that tell the groups of a paired table apart."""
    index = index if isinstance(index, tuple) else (index,)
    parts = [f"{name.split('.', 1)[-1]}={'all' if name == 'hardware.threads' and value == '0' else value}"
             for name, value in zip(names, index) if name in shown and value != "-"]
    return ", ".join(parts) or "all trials"


def _distinguishing(table: pd.DataFrame) -> list[str]:
    """Index levels of ``table`` with more than one value where set (absent ``-`` values of
    conditional parameters do not count): the ones worth printing."""
    if not isinstance(table.index, pd.MultiIndex):
        return [table.index.name]
    index = table.index.remove_unused_levels()
    return [name for name, level in zip(index.names, index.levels) if len(set(level) - {"-"}) > 1]


# --------------------------------------------------------------------------- the observations

@observation("A smaller model is not always faster")
def size_vs_latency(frame: pd.DataFrame) -> Finding:
    """A configuration with a smaller deployed model (another model or compression) that runs >5% slower
    than one with a bigger model, all else equal (same dataset, algorithm, software and platform)."""
    def pairs(cells: list[Cell]) -> list[Comparison]:
        return [Comparison(f"{small.name} ({small.medians['size_bytes'] / 1e6:.2f} MB) vs {big.name} "
                           f"({big.medians['size_bytes'] / 1e6:.2f} MB)", (_ratio(small, big),))
                for small in cells for big in cells if small.medians["size_bytes"] < big.medians["size_bytes"]]

    return _across_models(frame, "size_bytes", pairs, "a smaller model ran >5% slower than a bigger one",
                          "models or compressions of at least 2 distinct sizes")


@observation("Accuracy and latency are not aligned")
def accuracy_vs_latency(frame: pd.DataFrame) -> Finding:
    """A faster configuration is not necessarily less accurate: one model or compression >5% faster than
    another and at least as accurate, all else equal (same dataset, algorithm, software and platform)."""
    def pairs(cells: list[Cell]) -> list[Comparison]:
        return [Comparison(f"{fast.name} (accuracy {fast.medians['accuracy']:.3f}) vs {slow.name} "
                           f"({slow.medians['accuracy']:.3f})", (_ratio(slow, fast),))
                for fast, slow in permutations(cells, 2) if fast.medians["accuracy"] >= slow.medians["accuracy"]]

    return _across_models(frame, "accuracy", pairs,
                          "a model or compression was >5% faster than another and at least as accurate",
                          "at least 2 models or compressions")


def _across_models(frame: pd.DataFrame, objective: str, pairs: Callable[[list[Cell]], list[Comparison]],
                   claim: str, needs: str) -> Finding:
    """Judge the comparisons ``pairs`` makes among the configurations of each setting (models and
    compressions, all else equal); each setting's line adds Kendall's tau between ``objective`` and latency."""
    settings = _model_settings(frame.dropna(subset=[objective, "latency_ms"]))
    groups = {setting: comparisons for setting, cells in settings.items() if (comparisons := pairs(cells))}
    if not groups:
        return Finding(NOT_ENOUGH_DATA, f"needs {needs} measured with every other parameter equal")
    judgement = _judge(groups)
    lines = [f"{_group_line(setting, judged)}; Kendall tau({objective.split('_')[0]}, latency) = "
             f"{_tau(settings[setting], objective):.2f}" for setting, judged in judgement.groups.items()]
    return _finding(judgement, claim, "settings", lines)


def _tau(cells: list[Cell], objective: str) -> float:
    """Kendall's tau between an objective and latency over configurations (point estimates)."""
    return stats.kendalltau([c.medians[objective] for c in cells], [c.latency_ms for c in cells]).statistic


@observation("A smaller model is not always less accurate", latency=False)
def size_vs_accuracy(frame: pd.DataFrame) -> Finding:
    """How deployed size and accuracy rank together; a smaller model is not always less accurate."""
    group = frame.dropna(subset=["size_bytes", "accuracy"])
    if group["size_bytes"].nunique() < 2:
        return Finding(NOT_ENOUGH_DATA, "needs at least 2 distinct deployed sizes")
    tau = stats.kendalltau(group["size_bytes"], group["accuracy"]).statistic
    rows = group.sort_values("size_bytes").to_dict("records")
    better = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]
              if a["size_bytes"] < b["size_bytes"] and a["accuracy"] > b["accuracy"] + 0.01]
    lines = [f"- Kendall tau(size, accuracy) = {tau:.2f} over {len(group)} trials; {len(better)} pairs where "
             "the smaller model is more than 1 point more accurate"]
    if better:
        small, big = max(better, key=lambda p: p[0]["accuracy"] - p[1]["accuracy"])
        lines.append(f"- e.g. trial {small['trial']} ({small['size_bytes'] / 1e6:.2f} MB) reaches "
                     f"{small['accuracy']:.3f}, trial {big['trial']} ({big['size_bytes'] / 1e6:.2f} MB) "
                     f"{big['accuracy']:.3f}")
    return Finding(HOLDS if better else DOES_NOT_HOLD,
                   f"size and accuracy rank with tau = {tau:.2f}", lines)


@observation("Auto-tuning changes which convolution algorithm is fastest")
def tuning_changes_best_algorithm(frame: pd.DataFrame) -> Finding:
    """Per model and platform (all else equal): the fastest conv algorithm untuned is beaten >5% tuned by an
    algorithm it beat >5% untuned."""
    tuning = frame["software.tuning"] if "software.tuning" in frame else pd.Series(None, index=frame.index)
    untuned, tuned = (_table(frame[tuning == name], "algorithm.conv", also_varying=("software.tuning",))
                      for name in ("untuned", "metaschedule"))
    common = [] if untuned.empty or tuned.empty else list(untuned.index.intersection(tuned.index))
    names, shown = list(untuned.index.names), _distinguishing(untuned.loc[common]) if common else []
    groups = {}
    for group in common:
        before, after = untuned.loc[group].dropna(), tuned.loc[group].dropna()
        algorithms = before.index.intersection(after.index)
        if len(algorithms) < 2:
            continue
        best, fastest = (min(algorithms, key=lambda a, cells=cells: cells[a].latency_ms) for cells in (before, after))
        groups[f"{_label(group, names, shown)}: untuned best {best}, tuned best {fastest}"] = [
            Comparison(f"{best} vs {other}", (_ratio(before[other], before[best]), _ratio(after[best], after[other])))
            for other in algorithms if other != best]
    if not groups:
        return Finding(NOT_ENOUGH_DATA, "needs at least two conv algorithms measured both untuned "
                       "and tuned (metaschedule) with every other parameter equal")
    judgement = _judge(groups)
    lines = [_group_line(group, judged) for group, judged in judgement.groups.items()]
    return _finding(judgement, "the untuned fastest algorithm lost >5% tuned to one it beat >5% untuned",
                    "settings", lines)


WEIGHT_SPARSITY = "compression.weight_sparsity"


def _by_weight_sparsity(frame: pd.DataFrame) -> pd.DataFrame:
    """Unpruned and weight-pruned trials with the pruning level as one parameter (0 for unpruned)."""
    if "compression.technique" not in frame or "algorithm.format" not in frame:
        return frame.iloc[:0]
    technique = frame["compression.technique"]
    part = frame[technique.isin(["none", "weight_pruning"])]
    pruned = part["compression.technique"] == "weight_pruning"
    sparsity = part["compression.sparsity"] if "compression.sparsity" in part else pd.Series(0.0, index=part.index)
    return part.assign(**{WEIGHT_SPARSITY: sparsity.where(pruned, 0.0)})


@observation("The sparse format beats dense only above a sparsity threshold")
def sparse_threshold(frame: pd.DataFrame) -> Finding:
    """Per setting: the sparse format >5% slower than dense at the lowest weight sparsity measured and >5%
    faster at a higher one."""
    part = _by_weight_sparsity(frame)
    others = tuple(c for c in config_columns(part) if c.startswith("compression.") and c != WEIGHT_SPARSITY)
    table = _table(part, "algorithm.format", also_varying=others)
    if table.empty or not {"dense", "sparse"} <= set(table.columns):
        return Finding(NOT_ENOUGH_DATA, "needs unpruned or weight-pruned trials measured in both the dense and the "
                       "sparse format with every other parameter equal")
    table = table.dropna(subset=["dense", "sparse"])
    settings = _sparsity_settings(table)
    lines = [f"- {setting}: sparse speedup " + ", ".join(
        f"x{dense.latency_ms / sparse.latency_ms:.2f} at sparsity {level:g}" for level, dense, sparse in levels)
             for setting, levels in settings.items()]
    if all(len(levels) < 2 for levels in settings.values()):
        return Finding(NOT_ENOUGH_DATA, "one sparsity level measured per setting (speedups below); a threshold needs "
                       "trials at several sparsity levels", lines)
    judgement = _judge({setting: [Comparison(f"sparsity {levels[0][0]:g} vs {level:g}",
                                             (_ratio(levels[0][2], levels[0][1]), _ratio(dense, sparse)))
                                  for level, dense, sparse in levels[1:]]
                        for setting, levels in settings.items() if len(levels) > 1})
    thresholds = [f"- {setting}: sparse wins from sparsity "
                  f"{next(level for (level, _, _), j in zip(settings[setting][1:], judged) if j.outcome == SHOWN):g}"
                  for setting, judged in judgement.groups.items() if judgement.outcome(setting) == SHOWN]
    return _finding(judgement, "sparse lost >5% at the lowest sparsity and won >5% at a higher one", "settings",
                    lines + [_group_line(setting, judged) for setting, judged in judgement.groups.items()] + thresholds)


def _sparsity_settings(table: pd.DataFrame) -> dict[str, list[tuple[float, Cell, Cell]]]:
    """Per setting (every parameter but the sparsity): (sparsity, dense cell, sparse cell) by sparsity."""
    others = [n for n in table.index.names if n != WEIGHT_SPARSITY]
    shown = _distinguishing(table)
    return {_label(group, others, shown): sorted(
                ((float(s), row["dense"], row["sparse"])
                 for s, row in zip(part.index.get_level_values(WEIGHT_SPARSITY), part.to_dict("records"))),
                key=lambda level: level[0])
            for group, part in table.groupby(level=others)}


@observation("Compression speedups differ across hardware (their order changes)")
def compression_order_across_platforms(frame: pd.DataFrame) -> Finding:
    """Per pair of platforms (devices; thread counts are settings within one): two compressions (or one
    and none) whose order swaps, each >5% ahead of the other on one platform (geometric mean over the
    groups measured with both)."""
    dense = frame[frame["algorithm.format"] == "dense"] if "algorithm.format" in frame else frame
    table = _table(dense, "compression.technique",
                   also_varying=tuple(c for c in config_columns(frame) if c.startswith("compression.")))
    if table.empty or "none" not in table.columns:
        return Finding(NOT_ENOUGH_DATA, "needs compressed and uncompressed trials with every other "
                       "parameter equal")
    names = [n for n in ("hardware.device",) if n in table.index.names]  # thread counts: within a platform
    platforms = ({_label(key, names, names): part for key, part in table.groupby(level=names)} if names
                 else {"all trials": table})
    lines = [f"- {platform}: " + ", ".join(f"{t} x{_value(speedup):.2f}" for t, speedup in _speedups(part))
             + " (geometric mean speedup over none)" for platform, part in platforms.items()]
    if len(platforms) < 2:
        return Finding(NOT_ENOUGH_DATA, "one platform measured, so no order to compare (its speedups below)", lines)
    groups = {f"{p} vs {q}": swaps for p, q in combinations(platforms, 2) if (swaps := _swaps(platforms, p, q))}
    if not groups:
        return Finding(NOT_ENOUGH_DATA, "no two techniques measured on two platforms (speedups below)", lines)
    judgement = _judge(groups)
    return _finding(judgement, "two compressions swapped order, each >5% ahead on one platform",
                    "platform pairs", lines + [_group_line(g, judged) for g, judged in judgement.groups.items()])


def _swaps(platforms: dict[str, pd.DataFrame], p: str, q: str) -> list[Comparison]:
    """For each ordered pair of techniques (a, b) measured on platforms ``p`` and ``q``: a ahead of b on p
    and behind it on q (the effect is the smaller of the two ratios)."""
    techniques = platforms[p].columns
    return [Comparison(f"{a} ahead of {b} on {p}, behind on {q}", (ahead_p, ahead_q))
            for a, b in permutations(techniques, 2)
            if (ahead_p := _ahead(platforms[p], a, b)) and (ahead_q := _ahead(platforms[q], b, a))]


def _ahead(platform: pd.DataFrame, a: str, b: str) -> Contrast | None:
    """How much faster ``a`` runs than ``b`` on a platform: the mean log ratio over its groups where both
    were measured (those with timing rounds, where there are any); None if no group has both."""
    pairs = [(row[a], row[b]) for row in platform.to_dict("records")
             if isinstance(row.get(a), Cell) and isinstance(row.get(b), Cell)]
    with_rounds = [(x, y) for x, y in pairs if x.replicates is not None and y.replicates is not None]
    chosen = with_rounds or pairs
    return _mean([_ratio(slow=y, fast=x) for x, y in chosen]) if chosen else None


def _speedups(platform: pd.DataFrame) -> list[tuple[str, Contrast]]:
    """Each compression's speedup over none on a platform, fastest first."""
    found = [(t, speedup) for t in platform.columns if t != "none" and (speedup := _ahead(platform, t, "none"))]
    return sorted(found, key=lambda item: -_value(item[1]))


@observation("More threads do not always help")
def threads_that_do_not_help(frame: pd.DataFrame) -> Finding:
    """Per setting (all else equal): the most threads measured are less than 5% faster than the fewest."""
    table = _table(frame, "threads_used", also_varying=("hardware.threads",))
    if table.empty:
        return Finding(NOT_ENOUGH_DATA, "needs the same configuration measured at several thread counts")
    fewest, most = min(table.columns), max(table.columns)
    table = table.dropna(subset=[fewest, most])
    names, shown = list(table.index.names), _distinguishing(table)
    judgement = _judge({_label(index, names, shown): [Comparison(
        f"{fewest:g} threads {row[fewest].latency_ms:.2f} ms, {most:g} threads {row[most].latency_ms:.2f} ms, speedup",
        (_ratio(slow=row[fewest], fast=row[most]),), above=False)] for index, row in table.iterrows()})
    lines = [f"- {group}: {judged[0].comparison.label} {judged[0].describe()}"
             for group, judged in judgement.groups.items()]
    return _finding(judgement, f"going from {fewest:g} to {most:g} threads gained less than 5%", "settings", lines)


# --------------------------------------------------------------------------- report

def compute(frame: pd.DataFrame, study: str = "NAME") -> list[Observation]:
    """Every observation on the completed trials of ``frame`` (a ``report.detailed_frame``); a verdict that
    more timing rounds could decide says how to get them for ``study``."""
    done = completed(frame)
    if done.empty:
        return [Observation(title, NOT_ENOUGH_DATA, "no completed trial") for title in OBSERVATIONS]
    done = with_rounds(done)
    emulated = done["emulated"].fillna(False).astype(bool) if "emulated" in done else pd.Series(False, done.index)
    on_device = done[~emulated]
    left_out = ([f"- {int(emulated.sum())} trial(s) on an emulated device left out: their latency is the "
                 "emulator's, not the device's"] if emulated.any() else [])
    found = []
    for title, finding in OBSERVATIONS.items():
        if title in WITHOUT_LATENCY:
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
