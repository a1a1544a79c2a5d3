"""`report`: tables, plots, importances and observations of a real finished study; studies without
the data a part needs (the observations' logic on synthetic trials: test_observations.py)."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from dlas_dse.analysis import observations
from dlas_dse.analysis.plots import front_2d

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(finished_study):
    project, name = finished_study
    result = project.run("report", "--study", name)
    assert result.returncode == 0, result.stderr[-3000:]
    return project.root / "results" / name, result


def test_report_writes_every_table_and_plot(report):
    directory, result = report
    for name in ("trials.csv", "trials.parquet", "pareto.csv", "accuracy_vs_latency.png", "latency_vs_size.png",
                 "accuracy_vs_latency.html", "latency_vs_size.html", "importance.csv", "importance.png",
                 "observations.md"):
        assert (directory / name).stat().st_size > 0, name
        assert name in result.stdout
    for png in directory.glob("*.png"):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, png  # a drawn figure, not an empty canvas
    assert "plotly" in (directory / "accuracy_vs_latency.html").read_text()


def test_trials_table_has_every_layer_parameter_objective_stage_time_and_provenance(report):
    directory, _ = report
    csv = pd.read_csv(directory / "trials.csv")
    parquet = pd.read_parquet(directory / "trials.parquet")
    assert len(csv) == len(parquet) == 8 and (csv["state"] == "COMPLETE").all()
    for column in ("dataset.name", "model.architecture", "model.epochs", "compression.technique", "algorithm.conv",
                   "software.compiler", "hardware.device", "hardware.threads", "accuracy", "latency_ms",
                   "size_bytes", "latency_iqr_ms", "threads_used", "time_train_s", "time_compile_s",
                   "time_measure_s", "reused_train", "reused_build", "macs", "peak_gflops", "target",
                   "version_tvm", "worker_host"):
        assert column in csv.columns, column
    assert list(csv.columns[:2]) == ["trial", "state"] and csv.columns[2] == "dataset.image_size"
    # two models, each trained once: the other three trials of each model reused the checkpoint
    assert csv["reused_train"].sum() == 6
    # four builds (model x algorithm); the second thread count of each reused it
    assert csv["reused_build"].sum() == 4
    assert set(csv["threads_used"]) == {1, 2} and (csv["latency_ms"] > 0).all()


def test_pareto_table_holds_exactly_the_non_dominated_trials(report):
    directory, _ = report
    trials, pareto = pd.read_csv(directory / "trials.csv"), pd.read_csv(directory / "pareto.csv")
    # the front is judged on confirmed latencies wherever `optimize`'s re-measurement has one
    trials["latency_ms"] = trials["confirmed_latency_ms"].fillna(trials["latency_ms"])

    def dominates(a, b) -> bool:
        no_worse = (a.accuracy >= b.accuracy and a.latency_ms <= b.latency_ms and a.size_bytes <= b.size_bytes)
        return no_worse and (a.accuracy > b.accuracy or a.latency_ms < b.latency_ms or a.size_bytes < b.size_bytes)

    rows = list(trials.itertuples())
    expected = {r.trial for r in rows if not any(dominates(o, r) for o in rows)}
    assert set(pareto["trial"]) == expected and expected


def test_importances_cover_the_sampled_parameters(report):
    directory, _ = report
    table = pd.read_csv(directory / "importance.csv", index_col="parameter")
    assert set(table.index) == {"model.architecture", "algorithm.conv", "hardware.threads"}
    assert list(table.columns) == ["accuracy", "latency_ms", "size_bytes"]
    assert ((table >= 0) & (table <= 1)).all().all()
    assert table["latency_ms"].sum() == pytest.approx(1.0, abs=1e-6)
    # size depends on the model only
    assert table["size_bytes"].idxmax() == "model.architecture"


def test_observations_state_a_verdict_with_numbers(report):
    directory, _ = report
    text = (directory / "observations.md").read_text()
    for title in observations.OBSERVATIONS.names():
        assert f"## {title}" in text
    threads = text.split("## More threads do not always help")[1]
    assert "1 threads" in threads and "2 threads" in threads and "architecture=" in threads
    trials = pd.read_csv(directory / "trials.csv")
    if trials["latency_round_ms"].notna().all():  # measured in timing rounds: every setting has an interval
        assert "% (95% Bonferroni-corrected over 4 comparisons)" in threads
        assert "figures used: " in threads and "single median only" not in threads  # confirmed or first measurement
        assert threads.count("speedup x") == 4
    else:  # trials with a single median give no interval: re-measure
        assert threads.split("\n")[2].startswith("**not enough data**")
        assert "remeasure --study finished --all" in threads
    tuning = text.split("## Auto-tuning changes")[1]
    assert "**not enough data**" in tuning.split("##")[0]  # the study never tuned


def test_report_of_a_study_without_trials_says_so(project):
    name = project.tiny()
    storage = f"sqlite:///{project.root / 'results' / name}.db"
    (project.root / "results").mkdir()
    optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize", "minimize"])
    result = project.run("report", "--study", name)
    assert result.returncode == 1 and "no trials yet" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_of_a_study_whose_trials_all_failed_writes_the_table_only(project):
    name = project.tiny()
    storage = f"sqlite:///{project.root / 'results' / name}.db"
    (project.root / "results").mkdir()
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize", "minimize"])
    trial = study.ask()
    trial.set_user_attr("fail_reason", "out of memory while compiling")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    result = project.run("report", "--study", name)
    assert result.returncode == 1 and "no completed trial" in result.stderr
    directory = project.root / "results" / name
    assert "out of memory" in (directory / "trials.csv").read_text()
    assert not list(directory.glob("*.png"))


def test_report_of_an_unknown_study(project):
    project.tiny()
    result = project.run("report", "--study", "tiny")
    assert result.returncode == 2 and "run `python -m dlas_dse optimize --study tiny` first" in result.stderr


def test_front_2d_keeps_only_non_dominated_points():
    frame = pd.DataFrame({"latency_ms": [1.0, 2.0, 3.0, 2.5], "accuracy": [0.5, 0.8, 0.9, 0.7]})
    assert list(front_2d(frame, "latency_ms", "accuracy").index) == [0, 1, 2]
