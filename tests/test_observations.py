"""Observations decided from repeated measurements: bootstrap intervals of latency ratios, the correction
for the number of groups, the share of groups a finding needs, and what old trials without timing rounds
get. Synthetic trials only (frames built by hand, or trials added to an in-memory study)."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd

from dlas_dse.analysis import observations
from dlas_dse.analysis.observations import DOES_NOT_HOLD, HOLDS, NOT_ENOUGH_DATA
from dlas_dse.analysis.report import detailed_frame

SMALLER_SLOWER = "A smaller model is not always faster"
NOT_ALIGNED = "Accuracy and latency are not aligned"
TUNING = "Auto-tuning changes which convolution algorithm is fastest"
SPARSE = "The sparse format beats dense only above a sparsity threshold"
ORDER = "Compression speedups differ across hardware (their order changes)"
THREADS = "More threads do not always help"
SPREAD = np.array([0.955, 0.98, 1.0, 1.02, 1.045])  # rounds spread about their centre by ~3%


def _rounds(latency_ms: float, rng: np.random.Generator, noise: float = 0.03, n: int = 5) -> list[float]:
    """``n`` timing rounds around ``latency_ms`` with log-normal noise."""
    return list(latency_ms * rng.lognormal(0.0, noise, n))


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Completed trials built by hand; a row's ``latency_ms`` is the median of its rounds unless given."""
    base = {"state": "COMPLETE", "hardware.device": "host-cpu", "threads_used": 1, "accuracy": 0.9, "size_bytes": 1e6}
    return pd.DataFrame([{"trial": i, **base, "latency_ms": float(np.median(row.get("latency_round_ms", [np.nan]))),
                          **row} for i, row in enumerate(rows)])


def _found(frame: pd.DataFrame) -> dict[str, observations.Observation]:
    return {o.title: o for o in observations.compute(frame, "demo")}


def _models(platforms: int, small_ms, big_ms) -> list[dict]:
    """A small (1 MB) and a big (4 MB) model on each platform; ``small_ms(p)``/``big_ms(p)`` give their rounds."""
    return [{"hardware.device": f"d{p:02d}", "model.architecture": name, "size_bytes": size,
             "latency_round_ms": rounds(p)}
            for p in range(platforms) for name, size, rounds in (("small", 1e6, small_ms), ("big", 4e6, big_ms))]


def test_a_real_twofold_effect_holds_with_its_ratio_and_interval():
    rng = np.random.default_rng(0)
    found = _found(_frame(_models(4, lambda p: _rounds(2.0, rng), lambda p: _rounds(1.0, rng))))[SMALLER_SLOWER]
    assert found.verdict == HOLDS and "in 4 of 4 settings" in found.summary
    assert "intervals: 98.75% (95% Bonferroni-corrected over 4 comparisons)" in found.evidence[0]
    assert "figures used: first measurement for 8 trials" in found.evidence[1]
    low, high = (float(v) for v in found.evidence[2].split("[")[1].split("]")[0].split(", "))
    assert 1.05 < low < 2.0 < high < 2.3


def test_noise_alone_does_not_hold_even_where_single_medians_differ_by_more_than_5_percent():
    rng = np.random.default_rng(3)
    frame = _frame(_models(20, lambda p: _rounds(1.0, rng, noise=0.05), lambda p: _rounds(1.0, rng, noise=0.05)))
    medians = frame.pivot(index="hardware.device", columns="model.architecture", values="latency_ms")
    assert ((medians["small"] / medians["big"]) > 1.05).sum() >= 2  # the old single-median rule would say holds
    found = _found(frame)
    assert found[SMALLER_SLOWER].verdict != HOLDS and "in 0 of 20 settings" in found[SMALLER_SLOWER].summary
    assert found[NOT_ALIGNED].verdict != HOLDS


def test_the_same_distribution_with_little_noise_does_not_hold():
    rng = np.random.default_rng(1)
    found = _found(_frame(_models(20, lambda p: _rounds(1.0, rng, 0.01), lambda p: _rounds(1.0, rng, 0.01))))
    assert found[SMALLER_SLOWER].verdict == DOES_NOT_HOLD and "absent in 20" in found[SMALLER_SLOWER].summary


def test_intervals_are_corrected_for_the_number_of_groups():
    """A 10% effect whose 95% interval clears the margin holds alone; in 5 of 20 groups (the share a
    finding needs) it does not, because each interval is widened to 1 - 0.05/20."""
    borderline = _models(1, lambda p: list(1.10 * SPREAD), lambda p: list(SPREAD))
    alone = _found(_frame(borderline))[SMALLER_SLOWER]
    assert alone.verdict == HOLDS and "95% (95% Bonferroni-corrected over 1 comparisons)" in alone.evidence[0]
    among = _found(_frame(_models(20, lambda p: list((1.10 if p < 5 else 1.0) * SPREAD), lambda p: list(SPREAD))))
    among = among[SMALLER_SLOWER]
    assert among.verdict != HOLDS and "in 0 of 20 settings (holds from 5, 25%)" in among.summary
    assert "99.75%" in among.evidence[0] and "x1.10 [1.04" in among.evidence[2]


def test_a_real_effect_in_one_of_twenty_groups_is_not_a_finding():
    rng = np.random.default_rng(2)
    found = _found(_frame(_models(20, lambda p: _rounds(2.0 if p == 0 else 1.0, rng, 0.01),
                                  lambda p: _rounds(1.0, rng, 0.01))))[SMALLER_SLOWER]
    assert found.verdict == DOES_NOT_HOLD and "in 1 of 20 settings" in found.summary
    assert "d00, 1 thread: shown" in "\n".join(found.evidence)


def test_accuracy_and_latency_not_aligned():
    rng = np.random.default_rng(4)

    def configurations(accurate_ms: float, other_ms: float) -> list[dict]:
        """Model a (more accurate) and b, each with two conv algorithms (gemm twice as fast as direct)."""
        return [{"model.architecture": model, "accuracy": accuracy, "algorithm.conv": conv,
                 "latency_round_ms": _rounds(ms * (0.5 if conv == "gemm" else 1.0), rng, 0.01)}
                for model, accuracy, ms in (("a", 0.95, accurate_ms), ("b", 0.90, other_ms))
                for conv in ("direct", "gemm")]

    found = _found(_frame(configurations(accurate_ms=1.0, other_ms=2.0)))[NOT_ALIGNED]
    assert found.verdict == HOLDS and "in 2 of 2 settings" in found.summary
    assert "accuracy 0.950) vs" in found.evidence[2] and "x2.0" in found.evidence[2]
    # the more accurate model is the slower one: aligned (a faster algorithm of the same model is no counter-example)
    aligned = _found(_frame(configurations(accurate_ms=2.0, other_ms=1.0)))[NOT_ALIGNED]
    assert aligned.verdict == DOES_NOT_HOLD and "absent in 2" in aligned.summary


def test_trials_without_rounds_are_not_enough_data_and_name_remeasure():
    rows = [{"model.architecture": model, "size_bytes": size, "threads_used": threads, "hardware.threads": threads,
             "latency_ms": ms / threads} for model, size, ms in (("small", 1e6, 3.0), ("big", 4e6, 1.0))
            for threads in (1, 2)]
    found = observations.compute(_frame(rows), "demo")
    for title in (SMALLER_SLOWER, NOT_ALIGNED, THREADS):
        item = next(o for o in found if o.title == title)
        assert item.verdict == NOT_ENOUGH_DATA and "without timing rounds in 2" in item.summary
        assert item.evidence[0] == "- intervals: none (no comparison has timing rounds)"
        assert "single median only for 4 trials" in "\n".join(item.evidence)
        assert "from single medians (no rounds, no interval)" in "\n".join(item.evidence)
    text = observations.to_markdown(found, "demo")
    assert "`python -m dlas_dse remeasure --study demo --all`" in text and "Bonferroni" in text


def test_rounds_of_trials_sharing_a_setting_are_pooled():
    """Two trials of each setting with 2 rounds each: too few alone (3 needed), an interval pooled."""
    rows = [{"model.architecture": model, "size_bytes": size, "latency_round_ms": list(ms * SPREAD[k:k + 2])}
            for model, size, ms in (("small", 1e6, 2.0), ("big", 4e6, 1.0)) for k in (0, 3)]
    found = _found(_frame(rows))[SMALLER_SLOWER]
    assert found.verdict == HOLDS and "trials 0, 1 (1.00 MB) vs trials 2, 3 (4.00 MB): x2.0" in found.evidence[2]


def _study_trial(study: optuna.Study, threads: int, rounds: list[float], confirmed: list[float] | None) -> None:
    """Add a completed trial as a study stores it (config, objectives, its measurement) and, like
    ``remeasure``, its re-measurement as the study attribute ``confirmed_latency:<number>``."""
    attrs = {"config": {"model.architecture": "m", "hardware.device": "host-cpu", "hardware.threads": threads},
             "threads": threads, "latency": {"round_ms": rounds, "statistic": "min_round_median", "noisy": False}}
    study.add_trial(optuna.trial.create_trial(values=[0.9, float(min(rounds)), 1e6], user_attrs=attrs))
    if confirmed is not None:
        study.set_user_attr(f"confirmed_latency:{len(study.trials) - 1}", {
            "latency_ms": float(np.median(confirmed)), "round_ms": confirmed, "ci_ms": [min(confirmed), max(confirmed)],
            "rounds": len(confirmed), "noisy": True, "on_front": True})


def test_detailed_frame_carries_rounds_and_observations_prefer_the_confirmed_figures():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms", "size_bytes"])
    first = list(4.0 * SPREAD)  # first measurement: 2 threads no faster than 1
    _study_trial(study, 1, first, confirmed=list(4.0 * SPREAD))
    _study_trial(study, 2, first, confirmed=list(2.0 * SPREAD))  # re-measured: twice as fast
    _study_trial(study, 2, first, confirmed=None)
    frame = detailed_frame(study)
    assert frame.loc[0, "latency_round_ms"] == first and not frame.loc[0, "latency_noisy"]
    assert frame.loc[1, "confirmed_round_ms"] == list(2.0 * SPREAD) and frame.loc[1, "confirmed_latency_ms"] == 2.0
    assert frame.loc[1, ["confirmed_ci_low_ms", "confirmed_ci_high_ms"]].tolist() == [2.0 * SPREAD[0], 2.0 * SPREAD[-1]]
    assert frame.loc[2, "confirmed_round_ms"] is None and np.isnan(frame.loc[2, "confirmed_latency_ms"])
    threads = _found(frame[frame["trial"] != 2])[THREADS]
    assert threads.verdict == DOES_NOT_HOLD and "speedup x2.00" in threads.evidence[2]
    assert "figures used: confirmed re-measurement for 2 trials" in threads.evidence[1]
    # the trial never re-measured adds its first measurement to its setting's pooled rounds
    assert "confirmed re-measurement for 2 trials, first measurement for 1 trials" in _found(frame)[THREADS].evidence[1]


def test_threads_that_help_or_do_not():
    rng = np.random.default_rng(5)

    def rows(speedup: float) -> list[dict]:
        return [{"model.architecture": f"m{m}", "threads_used": t, "hardware.threads": t,
                 "latency_round_ms": _rounds(4.0 / (speedup if t == 2 else 1.0), rng, 0.01)}
                for m in range(4) for t in (1, 2)]

    helps = _found(_frame(rows(2.0)))[THREADS]
    assert helps.verdict == DOES_NOT_HOLD and "1 threads" in helps.evidence[2] and "absent" in helps.evidence[2]
    assert _found(_frame(rows(1.0)))[THREADS].verdict == HOLDS


def test_tuning_that_changes_the_fastest_algorithm_is_found():
    rng = np.random.default_rng(6)

    def rows(tuned_gemm_ms: float) -> list[dict]:
        return [{"model.architecture": "m", "software.tuning": tuning, "algorithm.conv": conv,
                 "latency_round_ms": _rounds(ms, rng)}
                for tuning, conv, ms in [("untuned", "direct", 5.0), ("untuned", "gemm", 7.0),
                                         ("metaschedule", "direct", 4.0), ("metaschedule", "gemm", tuned_gemm_ms)]]

    changed = _found(_frame(rows(2.0)))[TUNING]
    assert changed.verdict == HOLDS and "in 1 of 1 settings" in changed.summary
    assert "untuned best direct, tuned best gemm: shown" in changed.evidence[2]
    assert "direct vs gemm: x1.4" in changed.evidence[2]
    assert not any("partly untuned" in line for line in changed.evidence)
    assert _found(_frame(rows(9.0)))[TUNING].verdict == DOES_NOT_HOLD
    # a tuned trial whose sparse tasks kept their default schedule is named: its figure is partly untuned
    partly = _frame(rows(2.0)).assign(tuning_default_tasks=[0, 0, 0, 2])
    told = [line for line in _found(partly)[TUNING].evidence if "partly untuned" in line]
    assert told == ["- 1 tuned trials (e.g. 3) kept the default schedule of tasks MetaSchedule cannot tune "
                    "(sparse loops): their tuned figures are partly untuned"]


def test_sparse_threshold_and_compression_order():
    rng = np.random.default_rng(7)
    rows = [{"compression.technique": "weight_pruning", "compression.sparsity": s, "algorithm.conv": "gemm",
             "algorithm.format": f, "latency_round_ms": _rounds(ms, rng)}
            for s, f, ms in [(0.5, "dense", 4.0), (0.5, "sparse", 6.0), (0.9, "dense", 4.0), (0.9, "sparse", 2.0)]]
    sparse = _found(_frame(rows))[SPARSE]
    assert sparse.verdict == HOLDS and "sparse wins from sparsity 0.9" in "\n".join(sparse.evidence)
    speeds = {("host-cpu", 1): {"none": 10.0, "int8": 5.0, "fp16": 8.0},
              ("board", 1): {"none": 10.0, "int8": 12.0, "fp16": 6.0},
              ("board", 2): {"none": 6.0, "int8": 7.0, "fp16": 3.8}}
    rows = [{"hardware.device": device, "hardware.threads": threads, "threads_used": threads,
             "compression.technique": technique, "algorithm.format": "dense", "latency_round_ms": _rounds(ms, rng)}
            for (device, threads), by_technique in speeds.items() for technique, ms in by_technique.items()]
    order = _found(_frame(rows))[ORDER]
    assert order.verdict == HOLDS and "in 1 of 1 platform pairs" in order.summary
    assert any(line.startswith("- device=board: fp16 x1.6") for line in order.evidence)  # both thread counts
    assert "shown (2 of 6 comparisons); strongest: fp16 ahead of int8 on device=board, behind on " \
           "device=host-cpu" in order.evidence[-1]
    one_device = _frame([{**row, "hardware.device": "host-cpu"} for row in rows if row["hardware.device"] == "board"])
    assert _found(one_device)[ORDER].verdict == NOT_ENOUGH_DATA  # thread counts are not platforms


def test_reports_are_deterministic():
    rng = np.random.default_rng(8)
    frame = _frame(_models(6, lambda p: _rounds(1.1, rng), lambda p: _rounds(1.0, rng)))
    assert observations.to_markdown(observations.compute(frame), "x") == observations.to_markdown(
        observations.compute(frame), "x")


def test_observations_without_completed_trials_say_not_enough_data():
    frame = pd.DataFrame([{"trial": 0, "state": "FAIL"}])
    assert {o.verdict for o in observations.compute(frame)} == {NOT_ENOUGH_DATA}
