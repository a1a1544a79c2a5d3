"""The observations themselves, one registered function each: what the DLAS paper found across the
stack, recomputed from a study."""

from __future__ import annotations

from itertools import combinations, permutations
from typing import Callable

import pandas as pd
from scipy import stats

from dlas_dse.analysis.observations.frames import (Cell, comparison_table, config_columns, distinguishing_columns,
                                                   model_settings, row_label)
from dlas_dse.analysis.observations.verdicts import (DOES_NOT_HOLD, HOLDS, NOT_ENOUGH_DATA, SHOWN, Comparison, Contrast,
                                                     Finding, contrast_value, finding_of, group_line, judge,
                                                     latency_ratio, mean_contrast)
from dlas_dse.registry import Registry

OBSERVATIONS = Registry("observation", "title")
"""Every finding function by the observation's title, in the order the report shows them; an entry's
``latency`` trait is False where it reads no latency (emulated trials count there too)."""


def observation(title: str, latency: bool = True) -> Callable:
    """Register a finding function under the observation's title (the report runs them in order);
    ``latency=False``: it reads no latency, so emulated trials are not left out of it."""

    def register(finding: Callable[[pd.DataFrame], Finding]) -> Callable[[pd.DataFrame], Finding]:
        return OBSERVATIONS.register(title, traits={"latency": latency})(finding)

    return register


@observation("A smaller model is not always faster")
def size_vs_latency(frame: pd.DataFrame) -> Finding:
    """A configuration with a smaller deployed model (another model or compression) that runs >5% slower
    than one with a bigger model, all else equal (same dataset, algorithm, software and platform)."""
    def pairs(cells: list[Cell]) -> list[Comparison]:
        return [Comparison(f"{small.name} ({small.medians['size_bytes'] / 1e6:.2f} MB) vs {big.name} "
                           f"({big.medians['size_bytes'] / 1e6:.2f} MB)", (latency_ratio(small, big),))
                for small in cells for big in cells if small.medians["size_bytes"] < big.medians["size_bytes"]]

    return _across_models(frame, "size_bytes", pairs, "a smaller model ran >5% slower than a bigger one",
                          "models or compressions of at least 2 distinct sizes")


@observation("Accuracy and latency are not aligned")
def accuracy_vs_latency(frame: pd.DataFrame) -> Finding:
    """A faster configuration is not necessarily less accurate: one model or compression >5% faster than
    another and at least as accurate, all else equal (same dataset, algorithm, software and platform)."""
    def pairs(cells: list[Cell]) -> list[Comparison]:
        return [Comparison(f"{fast.name} (accuracy {fast.medians['accuracy']:.3f}) vs {slow.name} "
                           f"({slow.medians['accuracy']:.3f})", (latency_ratio(slow, fast),))
                for fast, slow in permutations(cells, 2) if fast.medians["accuracy"] >= slow.medians["accuracy"]]

    return _across_models(frame, "accuracy", pairs,
                          "a model or compression was >5% faster than another and at least as accurate",
                          "at least 2 models or compressions")


def _across_models(frame: pd.DataFrame, objective: str, pairs: Callable[[list[Cell]], list[Comparison]],
                   claim: str, needs: str) -> Finding:
    """Judge the comparisons ``pairs`` makes among the configurations of each setting (models and
    compressions, all else equal); each setting's line adds Kendall's tau between ``objective`` and latency."""
    settings = model_settings(frame.dropna(subset=[objective, "latency_ms"]))
    groups = {setting: comparisons for setting, cells in settings.items() if (comparisons := pairs(cells))}
    if not groups:
        return Finding(NOT_ENOUGH_DATA, f"needs {needs} measured with every other parameter equal")
    judgement = judge(groups)
    lines = [f"{group_line(setting, judged)}; Kendall tau({objective.split('_')[0]}, latency) = "
             f"{_tau(settings[setting], objective):.2f}" for setting, judged in judgement.groups.items()]
    return finding_of(judgement, claim, "settings", lines)


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
    untuned, tuned = (comparison_table(frame[tuning == name], "algorithm.conv", also_varying=("software.tuning",))
                      for name in ("untuned", "metaschedule"))
    common = [] if untuned.empty or tuned.empty else list(untuned.index.intersection(tuned.index))
    names, shown = list(untuned.index.names), distinguishing_columns(untuned.loc[common]) if common else []
    groups = {}
    for group in common:
        before, after = untuned.loc[group].dropna(), tuned.loc[group].dropna()
        algorithms = before.index.intersection(after.index)
        if len(algorithms) < 2:
            continue
        best, fastest = (min(algorithms, key=lambda a, cells=cells: cells[a].latency_ms) for cells in (before, after))
        groups[f"{row_label(group, names, shown)}: untuned best {best}, tuned best {fastest}"] = [
            Comparison(f"{best} vs {other}", (latency_ratio(before[other], before[best]), latency_ratio(after[best], after[other])))
            for other in algorithms if other != best]
    if not groups:
        return Finding(NOT_ENOUGH_DATA, "needs at least two conv algorithms measured both untuned "
                       "and tuned (metaschedule) with every other parameter equal")
    judgement = judge(groups)
    lines = [group_line(group, judged) for group, judged in judgement.groups.items()]
    partly = frame[(tuning == "metaschedule") & (frame.get("tuning_default_tasks", 0) > 0)]
    if len(partly):
        lines.append(f"- {len(partly)} tuned trials (e.g. {', '.join(map(str, partly['trial'][:3]))}) kept the default "
                     "schedule of tasks MetaSchedule cannot tune (sparse loops): their tuned figures are partly untuned")
    return finding_of(judgement, "the untuned fastest algorithm lost >5% tuned to one it beat >5% untuned",
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
    table = comparison_table(part, "algorithm.format", also_varying=others)
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
    judgement = judge({setting: [Comparison(f"sparsity {levels[0][0]:g} vs {level:g}",
                                             (latency_ratio(levels[0][2], levels[0][1]), latency_ratio(dense, sparse)))
                                  for level, dense, sparse in levels[1:]]
                        for setting, levels in settings.items() if len(levels) > 1})
    thresholds = [f"- {setting}: sparse wins from sparsity "
                  f"{next(level for (level, _, _), j in zip(settings[setting][1:], judged) if j.outcome == SHOWN):g}"
                  for setting, judged in judgement.groups.items() if judgement.outcome(setting) == SHOWN]
    return finding_of(judgement, "sparse lost >5% at the lowest sparsity and won >5% at a higher one", "settings",
                    lines + [group_line(setting, judged) for setting, judged in judgement.groups.items()] + thresholds)


def _sparsity_settings(table: pd.DataFrame) -> dict[str, list[tuple[float, Cell, Cell]]]:
    """Per setting (every parameter but the sparsity): (sparsity, dense cell, sparse cell) by sparsity."""
    others = [n for n in table.index.names if n != WEIGHT_SPARSITY]
    shown = distinguishing_columns(table)
    return {row_label(group, others, shown): sorted(
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
    table = comparison_table(dense, "compression.technique",
                   also_varying=tuple(c for c in config_columns(frame) if c.startswith("compression.")))
    if table.empty or "none" not in table.columns:
        return Finding(NOT_ENOUGH_DATA, "needs compressed and uncompressed trials with every other "
                       "parameter equal")
    names = [n for n in ("hardware.device",) if n in table.index.names]  # thread counts: within a platform
    platforms = ({row_label(key, names, names): part for key, part in table.groupby(level=names)} if names
                 else {"all trials": table})
    lines = [f"- {platform}: " + ", ".join(f"{t} x{contrast_value(speedup):.2f}" for t, speedup in _speedups(part))
             + " (geometric mean speedup over none)" for platform, part in platforms.items()]
    if len(platforms) < 2:
        return Finding(NOT_ENOUGH_DATA, "one platform measured, so no order to compare (its speedups below)", lines)
    groups = {f"{p} vs {q}": swaps for p, q in combinations(platforms, 2) if (swaps := _swaps(platforms, p, q))}
    if not groups:
        return Finding(NOT_ENOUGH_DATA, "no two techniques measured on two platforms (speedups below)", lines)
    judgement = judge(groups)
    return finding_of(judgement, "two compressions swapped order, each >5% ahead on one platform",
                    "platform pairs", lines + [group_line(g, judged) for g, judged in judgement.groups.items()])


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
    return mean_contrast([latency_ratio(slow=y, fast=x) for x, y in chosen]) if chosen else None


def _speedups(platform: pd.DataFrame) -> list[tuple[str, Contrast]]:
    """Each compression's speedup over none on a platform, fastest first."""
    found = [(t, speedup) for t in platform.columns if t != "none" and (speedup := _ahead(platform, t, "none"))]
    return sorted(found, key=lambda item: -contrast_value(item[1]))


@observation("More threads do not always help")
def threads_that_do_not_help(frame: pd.DataFrame) -> Finding:
    """Per setting (all else equal): the most threads measured are less than 5% faster than the fewest."""
    table = comparison_table(frame, "threads_used", also_varying=("hardware.threads",))
    if table.empty:
        return Finding(NOT_ENOUGH_DATA, "needs the same configuration measured at several thread counts")
    fewest, most = min(table.columns), max(table.columns)
    table = table.dropna(subset=[fewest, most])
    names, shown = list(table.index.names), distinguishing_columns(table)
    judgement = judge({row_label(index, names, shown): [Comparison(
        f"{fewest:g} threads {row[fewest].latency_ms:.2f} ms, {most:g} threads {row[most].latency_ms:.2f} ms, speedup",
        (latency_ratio(slow=row[fewest], fast=row[most]),), above=False)] for index, row in table.iterrows()})
    lines = [f"- {group}: {judged[0].comparison.label} {judged[0].describe()}"
             for group, judged in judgement.groups.items()]
    return finding_of(judgement, f"going from {fewest:g} to {most:g} threads gained less than 5%", "settings", lines)
