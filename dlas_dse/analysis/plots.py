"""Figures of a study: Pareto fronts per platform (static PNG and interactive HTML) and
parameter importances."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.express as px  # noqa: E402

AXES = {"accuracy": "top-1 accuracy (validation subset)", "latency_ms": "latency (ms, batch 1)",
        "size_mb": "deployed size (MB)"}
NAMES = {"accuracy": "accuracy", "latency_ms": "latency", "size_mb": "deployed size"}
MAXIMIZED = {"accuracy"}
MODEL = "model.architecture"
LOG_WHEN_SPREAD = ("latency_ms", "size_mb")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
PAIRS = (("latency_ms", "accuracy"), ("size_mb", "latency_ms"))
EMULATED = "emulated (not the device's)"
"""The latency source of a trial run on an emulated device."""
HOVER = ("trial", "latency_source", "model.architecture", "compression.technique", "algorithm.conv", "algorithm.format",
         "software.tuning", "threads_used")


def plottable(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed trials with the columns the plots use (``size_mb``, ``platform``)."""
    from dlas_dse.analysis.observations import completed

    done = completed(frame)
    if done.empty:
        return done
    confirmed = done["confirmed_latency_ms"] if "confirmed_latency_ms" in done else pd.Series(float("nan"), done.index)
    source = confirmed.notna().map({True: "confirmed", False: "first measurement"})
    if "emulated" in done:
        source = source.where(~done["emulated"].fillna(False).astype(bool), EMULATED)
    return done.assign(size_mb=done["size_bytes"] / 1e6, latency_ms=confirmed.fillna(done["latency_ms"]),
                       latency_source=source)


def label(frame: pd.DataFrame, column: str) -> str:
    """The axis label of ``column``; for latency, which figures the plot shows."""
    text = AXES.get(column, column)
    if column == "latency_ms" and "latency_source" in frame and (frame["latency_source"] == "confirmed").any():
        confirmed = int((frame["latency_source"] == "confirmed").sum())
        text += f"; confirmed for {confirmed} of {len(frame)} trials"
    if column == "latency_ms" and "latency_source" in frame and (frame["latency_source"] == EMULATED).any():
        text += f"; {int((frame['latency_source'] == EMULATED).sum())} of {len(frame)} emulated: not the device's"
    return text


def front_2d(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The points no other point beats on both ``x`` and ``y`` (directions from ``MAXIMIZED``),
    sorted by ``x``."""
    sign_x, sign_y = (-1 if x in MAXIMIZED else 1), (-1 if y in MAXIMIZED else 1)
    ordered = frame.assign(_x=sign_x * frame[x], _y=sign_y * frame[y]).sort_values(["_x", "_y"])
    kept, best_y = [], float("inf")
    for index, row in ordered.iterrows():
        if row["_y"] < best_y:
            kept.append(index)
            best_y = row["_y"]
    return frame.loc[kept].sort_values(x)


def _model_markers(frame: pd.DataFrame) -> dict[str, str]:
    """A marker shape per model when the plot shows several (the colour shows another layer)."""
    models = sorted(frame[MODEL].dropna().unique()) if MODEL in frame else []
    return dict(zip(models, MARKERS)) if len(models) > 1 else {}


def _log_scale(ax: plt.Axes, which: str) -> None:
    """Log scale on axis ``which`` ("x" or "y") with plain tick labels (0.5, 1, 2, 5, 10 ...)."""
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def pareto_plot(frame: pd.DataFrame, x: str, y: str, color: str, ax: plt.Axes | None = None) -> plt.Axes:
    """Scatter of ``y`` against ``x`` coloured by ``color`` with the 2-D Pareto front as a step line."""
    ax = ax or plt.subplots(figsize=(6, 4.5))[1]
    shapes = _model_markers(frame) if color != MODEL else {}
    for index, (value, group) in enumerate(frame.groupby(color, sort=True)):
        for model, points in (group.groupby(MODEL) if shapes else [(None, group)]):
            ax.scatter(points[x], points[y], color=f"C{index}", marker=shapes.get(model, "o"), s=36, alpha=0.85,
                       edgecolors="white", linewidths=0.5, label=str(value))
    for model, marker in shapes.items():
        ax.scatter([], [], color="gray", marker=marker, label=f"model: {model}")
    front = front_2d(frame, x, y)
    ax.step(front[x], front[y], where="post", color="black", linewidth=1, alpha=0.6)
    ax.scatter(front[x], front[y], s=110, facecolors="none", edgecolors="black", linewidths=1,
               label="Pareto front (ringed)")
    ax.set_xlabel(label(frame, x))
    ax.set_ylabel(label(frame, y))
    for column, which in ((x, "x"), (y, "y")):
        if column in LOG_WHEN_SPREAD and frame[column].max() > 8 * frame[column].min():
            _log_scale(ax, which)
    ax.grid(True, alpha=0.3)
    return ax


def pareto_png(frame: pd.DataFrame, x: str, y: str, color: str, path: Path) -> Path:
    """One panel per platform, shared legend below; saved as PNG."""
    platforms = sorted(frame["platform"].unique())
    columns = min(3, len(platforms))
    rows = -(-len(platforms) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(max(8.0, 5.2 * columns), 4.2 * rows + 1.0),
                                squeeze=False, layout="constrained")
    for ax, platform in zip(axes.flat, platforms):
        pareto_plot(frame[frame["platform"] == platform], x, y, color, ax)
        ax.set_title(platform)
    for ax in list(axes.flat)[len(platforms):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(handles.values(), handles.keys(), title=color.split(".", 1)[-1], loc="outside lower center",
                  ncol=min(len(handles), 2 * columns + 1), frameon=False)
    figure.suptitle(f"{NAMES.get(y, y).capitalize()} vs {NAMES.get(x, x)} per platform")
    figure.savefig(path, dpi=120, bbox_inches="tight")  # a legend wider than the panels is not cut off
    plt.close(figure)
    return path


def pareto_html(frame: pd.DataFrame, x: str, y: str, color: str, path: Path) -> Path:
    """The same plot, interactive (hover shows each trial's configuration), one facet per platform."""
    hover = [c for c in HOVER if c in frame]
    figure = px.scatter(frame, x=x, y=y, color=frame[color].astype(str), facet_col="platform", facet_col_wrap=3,
                        hover_data=hover, labels={**AXES, x: label(frame, x), y: label(frame, y),
                                                  "color": color.split(".", 1)[-1]},
                        title=f"{NAMES.get(y, y).capitalize()} vs {NAMES.get(x, x)} per platform")
    figure.write_html(path, include_plotlyjs="cdn")
    return path


def importance_png(importances: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars: each parameter's fANOVA importance for each objective."""
    figure, ax = plt.subplots(figsize=(7, 0.5 * len(importances) + 1.8))
    importances.sort_values(importances.columns[0]).plot.barh(ax=ax, width=0.8)
    ax.set_xlabel("fANOVA importance (share of the objective's variance)")
    ax.set_ylabel("parameter")
    ax.set_title("Parameter importance per objective")
    ax.legend(title="objective", loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def varying_parameters(frame: pd.DataFrame) -> list[str]:
    """The layer parameters that take more than one value among ``frame``'s trials."""
    from dlas_dse.analysis.observations import config_columns

    return [c for c in config_columns(frame) if frame[c].astype(str).nunique() > 1]


def interaction_plot(frame: pd.DataFrame, x: str, trace: str, y: str = "latency_ms",
                     ax: plt.Axes | None = None) -> plt.Axes:
    """Median ``y`` at each value of ``x``, one line per value of ``trace``: lines that are not
    parallel show that the two layers interact (the best ``x`` depends on ``trace``)."""
    ax = ax or plt.subplots(figsize=(5.5, 4))[1]
    table = frame.pivot_table(index=frame[x].astype(str), columns=frame[trace].astype(str), values=y,
                              aggfunc="median")
    table.plot(ax=ax, marker="o")
    ax.set_xlabel(x)
    ax.set_ylabel(f"median {AXES.get(y, y)}")
    ax.legend(title=trace, fontsize="small")
    ax.grid(True, alpha=0.3)
    return ax


def predicted_vs_measured_png(predictions: pd.DataFrame, title: str, path: Path) -> Path:
    """Predicted against measured latency (log axes; columns ``measured_ms``, ``predicted_ms``,
    ``held_out``) with the identity line and the ±10% band."""
    figure, ax = plt.subplots(figsize=(6, 5.5))
    for index, (name, group) in enumerate(predictions.groupby("held_out", sort=True)):
        ax.scatter(group["measured_ms"], group["predicted_ms"], s=22, color=f"C{index % 10}", alpha=0.85,
                   label=name)
    values = predictions[["measured_ms", "predicted_ms"]].to_numpy()
    low, high = values.min() * 0.8, values.max() * 1.25
    line = np.geomspace(low, high, 50)
    ax.plot(line, line, color="black", linewidth=1, label="predicted = measured")
    ax.fill_between(line, line * 0.9, line * 1.1, color="gray", alpha=0.25, label="±10%")
    _log_scale(ax, "x")
    _log_scale(ax, "y")
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="measured latency (ms)",
           ylabel="predicted latency (ms), model trained without the point")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize="x-small", title="held out", title_fontsize="x-small", loc="upper left")
    ax.grid(True, alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
