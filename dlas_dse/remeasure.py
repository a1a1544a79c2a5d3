"""A confirmed Pareto front: the front's trials (and every trial within a margin of it) timed again
in alternating rounds, in one process, with a confidence interval of each latency.

A first measurement happens whenever a trial runs, at whatever load the machine had then; the
figures that decide the front deserve to be taken side by side. Each round times every selected
trial once (one interference-checked window, the trial's own thread count, rotating the order), so
that a drift of the machine hits all of them alike. After every round the figures are stored in the
study (study user attribute ``confirmed_latency:<trial number>``): a killed re-measurement resumes
where it stopped, and a rerun that finds every trial confirmed measures nothing.

A record: ``round_ms`` (one figure per round), ``latency_ms`` (their median), ``ci_ms`` (a
bootstrap interval of that median), ``rounds``, ``noisy`` (some round had no clean window),
``on_front`` (whether the trial is on the front once the confirmed figures replace the first ones).
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import optuna
from tqdm import tqdm
from optuna.trial import FrozenTrial, TrialState

from dlas_dse.analysis.confirmed import ATTRIBUTE, front_numbers, records
from dlas_dse.config import StudyConfig
from dlas_dse.space import nest
from dlas_dse.stack.compilers import Executable
from dlas_dse.stack.datasets import load_dataset
from dlas_dse.stack.devices import Device, create_device
from dlas_dse.stack.measurement import measure_latency
from dlas_dse.trial import rebuild_latency_executable

MARGIN = 0.05
"""A trial within 5% of the front's latency (and not worse in the other objectives) is re-timed too."""
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_interval(values: list[float], level: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (deterministic for a seed)."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return float(data[0]), float(data[0])
    medians = np.median(np.random.default_rng(seed).choice(data, (resamples, len(data))), axis=1)
    low, high = np.percentile(medians, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def select_trials(study: optuna.Study, everything: bool, margin: float = MARGIN) -> list[FrozenTrial]:
    """The complete, measured trials to re-time (not emulated): all of them, or the front and those within
    ``margin``."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if "repeat_of" not in t.user_attrs and "build" in t.user_attrs
              and not t.user_attrs.get("emulated")]  # timing an emulated board again confirms nothing
    if everything:
        return trials
    near = set(front_numbers(study, margin))
    return [t for t in trials if t.number in near]


@dataclass
class _Timed:
    """One trial to re-time: its executable, the device it runs on (shared by the trials of that
    device: one board session) and the trial's thread count."""

    trial: FrozenTrial
    executable: Executable
    device: Device
    threads: int
    sample: np.ndarray


def _load(trial: FrozenTrial, cache_dir: str, devices: dict[str, Device]) -> _Timed:
    """Rebuild ``trial``'s latency artifact from the cache, on its device from ``devices``."""
    config = trial.user_attrs["config"]
    layers = nest(config)
    own = create_device(layers["hardware"])
    device = devices.setdefault(own.name, own)
    executable = rebuild_latency_executable(config, cache_dir, device, trial.user_attrs["build"]["build_key"])
    return _Timed(trial, executable, device, own.threads, load_dataset(layers["dataset"]).val_x[:1])


def _time_once(timed: _Timed, protocol: dict, all_cores: set[int]) -> tuple[float, bool]:
    """One round's figure of a trial: one interference-checked window at the trial's threads."""
    if all_cores:
        os.sched_setaffinity(0, all_cores)  # the previous trial may have pinned fewer cores
    timed.device.threads = timed.threads
    timed.device.configure_runtime()
    timed.device.pin(protocol["cpu_affinity"])
    settings = {k: v for k, v in protocol.items() if k not in ("cpu_affinity", "rounds")}
    settings["min_time_s"] = protocol["min_time_s"] / protocol["rounds"]  # a trial's window
    stats = measure_latency(lambda n: timed.executable.time_runs(timed.sample, n), **settings, rounds=1,
                            counters=timed.executable.cpu_counters())
    return stats.latency_ms, stats.noisy


def _record(round_ms: list[float], noisy_rounds: int) -> dict:
    low, high = bootstrap_interval(round_ms)
    return {"round_ms": round_ms, "rounds": len(round_ms), "latency_ms": float(np.median(round_ms)),
            "ci_ms": [low, high], "confidence": CONFIDENCE, "statistic": "median of the rounds' figures",
            "noisy_rounds": noisy_rounds, "noisy": noisy_rounds > 0, "on_front": None,
            "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def remeasure(config: StudyConfig, study: optuna.Study, rounds: int, everything: bool = False,
              log: Callable[[str], None] = print, progress: bool = True) -> dict[int, dict]:
    """Re-time the selected trials of ``study`` in ``rounds`` alternating rounds (resuming stored
    rounds), store each trial's record, then mark which are on the confirmed front."""
    selected = select_trials(study, everything)
    stored = records(study)
    todo = [t for t in selected if stored.get(t.number, {}).get("rounds", 0) < rounds]
    if todo:
        log(f"re-measuring {len(todo)} trial(s) in {rounds} alternating rounds"
            f" ({len(selected) - len(todo)} already confirmed)")
        _measure_rounds(config, study, todo, rounds, stored, progress)
    _mark_front(study)
    return records(study)


def _measure_rounds(config: StudyConfig, study: optuna.Study, todo: list[FrozenTrial], rounds: int,
                    stored: dict[int, dict], progress: bool) -> None:
    # TVM sizes its thread pool once per process: the largest thread count first
    todo = sorted(todo, key=lambda t: -int(t.user_attrs.get("threads") or 1))
    devices: dict[str, Device] = {}
    timed = [_load(trial, config.cache_dir, devices) for trial in todo]
    all_cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    figures = {t.trial.number: list(stored.get(t.trial.number, {}).get("round_ms", [])) for t in timed}
    noisy = {t.trial.number: stored.get(t.trial.number, {}).get("noisy_rounds", 0) for t in timed}
    for index in tqdm(range(rounds), desc="re-measuring", unit="round", disable=not progress):
        order = timed[index % len(timed):] + timed[:index % len(timed)]
        for item in order:
            number = item.trial.number
            if len(figures[number]) >= rounds:
                continue
            latency_ms, was_noisy = _time_once(item, config.settings["measurement"], all_cores)
            figures[number].append(latency_ms)
            noisy[number] += was_noisy
            study.set_user_attr(f"{ATTRIBUTE}{number}", _record(figures[number], noisy[number]))
    del timed, devices
    gc.collect()  # a board's session ends with its last reference


def _mark_front(study: optuna.Study) -> None:
    """Store in each confirmed record whether the trial is on the front of the confirmed figures."""
    on_front = set(front_numbers(study))
    for number, record in records(study).items():
        if record.get("on_front") != (number in on_front):
            study.set_user_attr(f"{ATTRIBUTE}{number}", {**record, "on_front": number in on_front})


def describe(confirmed: dict[int, dict], study: optuna.Study, objectives: list[str]) -> str:
    """One line per confirmed trial: first vs confirmed latency with its interval, front membership."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    latency = objectives.index("latency_ms")
    lines = []
    for number, record in sorted(confirmed.items()):
        low, high = record["ci_ms"]
        lines.append(f"trial {number}: first {trials[number].values[latency]:.3f} ms, confirmed "
                     f"{record['latency_ms']:.3f} ms [{low:.3f}, {high:.3f}] ({record['rounds']} rounds"
                     f"{', noisy' if record['noisy'] else ''})"
                     f"{'' if record['on_front'] else ' - not on the confirmed front'}")
    return "\n".join(lines)
