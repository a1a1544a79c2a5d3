"""The DLAS paper's kind of cross-stack findings, recomputed from one study's trials.

Each observation compares trials that differ in one layer only (every other layer parameter equal),
states whether the finding holds on this study's data, and keeps the numbers behind the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

HOLDS, DOES_NOT_HOLD, NOT_ENOUGH_DATA = "holds", "does not hold", "not enough data"
LAYERS = ("dataset", "model", "compression", "algorithm", "software", "hardware")
SLOWER = 1.05  # a latency ratio counts as slower/faster only beyond 5% (measurement noise)


@dataclass
class Finding:
    """What one observation found: its verdict, a one-line summary, the numbers (markdown lines)."""

    verdict: str
    summary: str
    evidence: list[str] = field(default_factory=list)


OBSERVATIONS: dict[str, Callable[[pd.DataFrame], Finding]] = {}


def observation(title: str) -> Callable:
    """Register a finding function under the observation's title (the report runs them in order)."""

    def register(finding: Callable[[pd.DataFrame], Finding]) -> Callable[[pd.DataFrame], Finding]:
        OBSERVATIONS[title] = finding
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


def _paired(frame: pd.DataFrame, varying: str, also_varying: tuple[str, ...] = (),
            value: str = "latency_ms") -> pd.DataFrame:
    """Median ``value`` per setting of ``varying`` (columns) for each group of trials equal in every
    other layer parameter (rows); groups where only one setting was measured are dropped."""
    ignored = {varying, *also_varying}
    keys = [c for c in config_columns(frame) if c not in ignored]
    if varying not in frame or frame[varying].nunique() < 2:
        return pd.DataFrame()
    table = frame.assign(**{k: frame[k].map(_text) for k in keys}).pivot_table(
        index=keys, columns=varying, values=value, aggfunc="median")
    return table[table.notna().sum(axis=1) >= 2]


def _text(value) -> str:
    """A parameter value as a group key: ``-`` when absent, ``2`` rather than ``2.0``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


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
    return [name for name, level in zip(table.index.names, table.index.levels)
            if len(set(level) - {"-"}) > 1]


@observation("A smaller model is not always faster")
def size_vs_latency(frame: pd.DataFrame) -> Finding:
    """A smaller deployed model is not always faster (on the same platform)."""
    lines, counter_examples = [], []
    for platform, group in frame.groupby("platform"):
        group = group.dropna(subset=["size_bytes", "latency_ms"])
        if group["size_bytes"].nunique() < 2:
            continue
        tau = stats.kendalltau(group["size_bytes"], group["latency_ms"]).statistic
        rows = group.sort_values("size_bytes").to_dict("records")
        pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]
                 if a["size_bytes"] < b["size_bytes"] and a["latency_ms"] > SLOWER * b["latency_ms"]]
        lines.append(f"- {platform}: Kendall tau(size, latency) = {tau:.2f} over {len(group)} trials; "
                     f"{len(pairs)} pairs where the smaller model is >5% slower")
        if pairs:
            small, big = max(pairs, key=lambda p: p[0]["latency_ms"] / p[1]["latency_ms"])
            counter_examples.append(
                f"- e.g. on {platform}: trial {small['trial']} ({small['size_bytes'] / 1e6:.2f} MB) takes "
                f"{small['latency_ms']:.2f} ms, trial {big['trial']} ({big['size_bytes'] / 1e6:.2f} MB) "
                f"{big['latency_ms']:.2f} ms")
    if not lines:
        return Finding(NOT_ENOUGH_DATA, "needs at least 2 distinct sizes measured on one platform")
    verdict = HOLDS if counter_examples else DOES_NOT_HOLD
    summary = ("smaller models were slower in some pairs" if counter_examples
               else "on every platform a smaller model was never >5% slower")
    return Finding(verdict, summary, lines + counter_examples)


@observation("A smaller model is not always less accurate")
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
    """Per model and platform (all else equal): the fastest conv algorithm untuned vs tuned."""
    best, shown = {}, []
    for tuning in ("untuned", "metaschedule"):
        part = frame[frame["software.tuning"] == tuning] if "software.tuning" in frame else frame.iloc[:0]
        table = _paired(part, "algorithm.conv", also_varying=("software.tuning",))
        best[tuning] = {} if table.empty else table.idxmin(axis=1).to_dict()
        names = [] if table.empty else list(table.index.names)
        shown = shown or ([] if table.empty else _distinguishing(table))
    common = [group for group in best["untuned"] if group in best["metaschedule"]]
    if not common:
        return Finding(NOT_ENOUGH_DATA, "needs at least two conv algorithms measured both untuned "
                       "and tuned (metaschedule) with every other parameter equal")
    changed = [group for group in common if best["untuned"][group] != best["metaschedule"][group]]
    lines = [f"- {_label(group, names, shown)}: untuned best {best['untuned'][group]}, tuned best "
             f"{best['metaschedule'][group]}" + (" (changed)" if group in changed else "") for group in common]
    return Finding(HOLDS if changed else DOES_NOT_HOLD,
                   f"the fastest algorithm changed in {len(changed)} of {len(common)} settings", lines)


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
    """Per conv algorithm: from which weight sparsity the sparse format beats dense."""
    part = _by_weight_sparsity(frame)
    others = tuple(c for c in config_columns(part) if c.startswith("compression.") and c != WEIGHT_SPARSITY)
    table = _paired(part, "algorithm.format", also_varying=others)
    if table.empty or not {"dense", "sparse"} <= set(table.columns):
        return Finding(NOT_ENOUGH_DATA, "needs unpruned or weight-pruned trials measured in both the dense and the "
                       "sparse format with every other parameter equal")
    table = table.dropna(subset=["dense", "sparse"])
    names, shown = list(table.index.names), _distinguishing(table) + [WEIGHT_SPARSITY]
    speedups = table["dense"] / table["sparse"]
    lines = [f"- {_label(index, names, shown)}: dense {row['dense']:.2f} ms, sparse {row['sparse']:.2f} ms, "
             f"sparse speedup x{speedups[index]:.2f}" for index, row in table.iterrows()]
    if table.index.get_level_values(WEIGHT_SPARSITY).nunique() < 2:
        return Finding(NOT_ENOUGH_DATA, f"one sparsity level measured: sparse faster in {(speedups > SLOWER).sum()}, "
                       f"slower in {(speedups < 1 / SLOWER).sum()} of {len(table)} settings; a threshold needs "
                       "several sparsity levels", lines)
    crossovers = _crossovers(table, WEIGHT_SPARSITY)
    return Finding(HOLDS if crossovers else DOES_NOT_HOLD,
                   "; ".join(crossovers) or "no setting where sparse loses at low sparsity and wins above it", lines)


def _crossovers(table: pd.DataFrame, level: str) -> list[str]:
    """Settings where sparse is slower at low sparsity and faster from some sparsity on."""
    others = [n for n in table.index.names if n != level]
    shown, found = _distinguishing(table), []
    for group, part in (table.groupby(level=others) if others else [((), table)]):
        ratios = (part["dense"] / part["sparse"]).droplevel(others) if others else part["dense"] / part["sparse"]
        ratios = ratios.sort_index(key=lambda s: s.astype(float))
        winning = [float(s) for s, r in ratios.items() if r > SLOWER]
        if winning and ratios.iloc[0] < 1:
            found.append(f"{_label(group, others, shown)}: sparse wins from sparsity {min(winning):g}")
    return found


@observation("Compression speedups differ across hardware (their order changes)")
def compression_order_across_platforms(frame: pd.DataFrame) -> Finding:
    """Speedup of each compression over none, per platform; does their order change?"""
    dense = frame[frame["algorithm.format"] == "dense"] if "algorithm.format" in frame else frame
    table = _paired(dense, "compression.technique",
                    also_varying=tuple(c for c in config_columns(frame) if c.startswith("compression.")))
    if table.empty or "none" not in table.columns:
        return Finding(NOT_ENOUGH_DATA, "needs compressed and uncompressed trials with every other "
                       "parameter equal")
    speedups = table.rdiv(table["none"], axis=0).drop(columns="none")
    platform_names = [n for n in ("hardware.device", "hardware.threads") if n in speedups.index.names]
    per_platform = np.exp(np.log(speedups).groupby(level=platform_names).mean())
    lines = []
    for platform, row in per_platform.iterrows():
        ranked = row.dropna().sort_values(ascending=False)
        speeds = ", ".join(f"{technique} x{speedup:.2f}" for technique, speedup in ranked.items())
        lines.append(f"- {_label(platform, platform_names, platform_names)}: {speeds}"
                     + " (geometric mean speedup over none)")
    slowdowns = [f"{technique} on {_label(platform, platform_names, platform_names)}"
                 for platform, row in per_platform.iterrows() for technique, speedup in row.dropna().items()
                 if speedup < 1]
    orders = {tuple(row.dropna().sort_values(ascending=False).index) for _, row in per_platform.iterrows()}
    if len(per_platform) < 2:
        return Finding(NOT_ENOUGH_DATA, "one platform measured, so no order to compare (its speedups below)",
                       lines)
    changes = len(orders) > 1
    summary = ("the order of compression speedups differs between platforms" if changes
               else "every platform ranks the compressions the same")
    if slowdowns:
        summary += "; slowdowns: " + ", ".join(slowdowns)
    return Finding(HOLDS if changes else DOES_NOT_HOLD, summary, lines)


@observation("More threads do not always help")
def threads_that_do_not_help(frame: pd.DataFrame) -> Finding:
    """Where the most threads are not faster than the fewest (all else equal)."""
    table = _paired(frame, "threads_used", also_varying=("hardware.threads",))
    if table.empty:
        return Finding(NOT_ENOUGH_DATA, "needs the same configuration measured at several thread counts")
    fewest, most = min(table.columns), max(table.columns)
    table = table.dropna(subset=[fewest, most])
    names, shown = list(table.index.names), _distinguishing(table)
    speedups = table[fewest] / table[most]
    no_help = speedups[speedups < SLOWER]
    lines = [f"- {_label(i, names, shown)}: {fewest:g} threads "
             f"{table.loc[i, fewest]:.2f} ms, {most:g} threads {table.loc[i, most]:.2f} ms (x{s:.2f})"
             for i, s in speedups.sort_values().items()]
    summary = (f"{len(no_help)} of {len(speedups)} settings gain less than 5% from {fewest:g} to {most:g} threads; "
               f"median speedup x{speedups.median():.2f}")
    return Finding(HOLDS if len(no_help) else DOES_NOT_HOLD, summary, lines)


def compute(frame: pd.DataFrame) -> list[Observation]:
    """Every observation on the completed trials of ``frame`` (a ``report.detailed_frame``)."""
    done = completed(frame)
    return [Observation(title, NOT_ENOUGH_DATA, "no completed trial") if done.empty
            else Observation(title, **vars(finding(done))) for title, finding in OBSERVATIONS.items()]


def to_markdown(observations: list[Observation], study_name: str) -> str:
    """``observations.md``: one section per observation with its verdict and numbers."""
    lines = [f"# Cross-stack observations: study {study_name}", "",
             "Recomputed from this study's completed trials; trials are compared only with trials equal in "
             "every other layer parameter. Latency differences under 5% count as noise.", ""]
    for item in observations:
        lines += [f"## {item.title}", "", f"**{item.verdict}**: {item.summary}", ""]
        lines += item.evidence + ([""] if item.evidence else [])
    return "\n".join(lines)
