"""``python -m dlas_dse report``: a study's tables, plots, parameter importances and observations
written to one folder."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from dlas_dse.analysis import observations, plots
from dlas_dse.analysis.observations import config_columns
from dlas_dse.analysis.report import detailed_frame, pareto_frame

COLOR_BY = {"accuracy_vs_latency": "compression.technique", "latency_vs_size": "model.architecture"}


@dataclass
class Report:
    """What a report wrote and what it had to leave out (with the reason)."""

    directory: Path
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Trial and state first, then the layer parameters in DLAS order, then everything else."""
    layer = config_columns(frame)
    first = ["trial", "state", *layer]
    return frame[first + [c for c in frame.columns if c not in first]]


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing types (e.g. a parameter that is a number in one trial, text in another) as text."""
    mixed = [c for c in frame.columns if frame[c].dtype == object
             and len({type(v) for v in frame[c].dropna()}) > 1]
    return frame.assign(**{c: frame[c].map(lambda v: None if v is None else str(v)) for c in mixed})


def importances(study: optuna.Study) -> pd.DataFrame:
    """fANOVA importance of each sampled parameter (rows) for each objective (columns)."""
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    columns = {}
    for index, name in enumerate(names):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            columns[name] = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda trial, i=index: trial.values[i])
    return pd.DataFrame(columns).fillna(0.0)


def write_report(study: optuna.Study, directory: Path) -> Report:
    """Write trials.csv/.parquet, pareto.csv, Pareto plots (PNG + HTML), importances and
    observations.md into ``directory``; what cannot be drawn for lack of data is listed in
    ``Report.skipped``, never drawn empty."""
    directory.mkdir(parents=True, exist_ok=True)
    report = Report(directory)
    frame = detailed_frame(study)
    if frame.empty:
        report.skipped.append("the study has no trials yet: nothing to report")
        return report
    frame = ordered(frame)
    frame.to_csv(directory / "trials.csv", index=False)
    _parquet_safe(frame).to_parquet(directory / "trials.parquet", index=False)
    report.written += [directory / "trials.csv", directory / "trials.parquet"]
    done = plots.plottable(frame)
    if done.empty:
        report.skipped.append("no completed trial: no Pareto front, plots, importances or observations "
                              "(see the `note` column of trials.csv for why trials failed)")
        return report
    pareto_frame(study).to_csv(directory / "pareto.csv", index=False)
    report.written.append(directory / "pareto.csv")
    for (x, y), (name, color) in zip(plots.PAIRS, COLOR_BY.items()):
        color = color if color in done else "platform"
        report.written += [plots.pareto_png(done, x, y, color, directory / f"{name}.png"),
                           plots.pareto_html(done, x, y, color, directory / f"{name}.html")]
    _write_importances(study, report)
    found = observations.compute(frame, study.study_name)
    (directory / "observations.md").write_text(observations.to_markdown(found, study.study_name))
    report.written.append(directory / "observations.md")
    return report


def _write_importances(study: optuna.Study, report: Report) -> None:
    try:
        table = importances(study)
    except (RuntimeError, ValueError) as error:  # too few trials, or no parameter varies
        report.skipped.append(f"parameter importance: {error}")
        return
    if table.empty:
        report.skipped.append("parameter importance: no sampled parameter varies across completed trials")
        return
    table.index.name = "parameter"
    table.to_csv(report.directory / "importance.csv")
    report.written += [report.directory / "importance.csv",
                       plots.importance_png(table, report.directory / "importance.png")]
