"""From a study's trials to what the observations compare: completed trials, each with its timing
rounds, grouped into cells of one setting (their pooled rounds and bootstrap replicates), and
tables of cells that differ in one layer only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dlas_dse.objectives import OBJECTIVES

LAYERS = ("dataset", "model", "compression", "algorithm", "software", "hardware")
RESAMPLES, SEED = 2000, 0  # percentile bootstrap
MIN_ROUNDS = 3  # fewer pooled timing rounds give no interval
FIRST, CONFIRMED, SINGLE = "first measurement", "confirmed re-measurement", "single median only"


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


def comparison_table(frame: pd.DataFrame, varying: str, also_varying: tuple[str, ...] = ()) -> pd.DataFrame:
    """A Cell per setting of ``varying`` (columns) for each group of trials equal in every other layer
    parameter (rows); groups where only one setting was measured are dropped."""
    ignored = {varying, *also_varying}
    keys = [c for c in config_columns(frame) if c not in ignored]
    if varying not in frame or frame[varying].nunique() < 2:
        return pd.DataFrame()
    table = _cells_by(frame, keys, (varying,)).unstack(varying)
    return table[table.notna().sum(axis=1) >= 2]


def model_settings(frame: pd.DataFrame) -> dict[str, list[Cell]]:
    """The Cell of each configuration (every layer parameter and the platform equal), grouped by setting:
    equal in every layer parameter but the model and compression ones, and measured on one platform."""
    cells = _cells_by(frame, config_columns(frame), ("platform",))
    within = [n for n in cells.index.names if not n.startswith((*MODEL_LAYERS, "hardware."))]
    shown = [n for n in distinguishing_columns(cells) if n in within]
    return {row_label(key, within, shown): list(part) for key, part in cells.groupby(level=within)}


def _text(value) -> str:
    """A parameter value as a group key: ``-`` when absent, ``2`` rather than ``2.0``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def row_label(index, names: list[str], shown: list[str]) -> str:
    """``param=value`` for the parameters that tell the groups of a paired table apart."""
    index = index if isinstance(index, tuple) else (index,)
    parts = [f"{name.split('.', 1)[-1]}={'all' if name == 'hardware.threads' and value == '0' else value}"
             for name, value in zip(names, index) if name in shown and value != "-"]
    return ", ".join(parts) or "all trials"


def distinguishing_columns(table: pd.DataFrame) -> list[str]:
    """Index levels of ``table`` with more than one value where set (absent ``-`` values of
    conditional parameters do not count): the ones worth printing."""
    if not isinstance(table.index, pd.MultiIndex):
        return [table.index.name]
    index = table.index.remove_unused_levels()
    return [name for name, level in zip(index.names, index.levels) if len(set(level) - {"-"}) > 1]
