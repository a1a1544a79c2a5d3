"""`report`: tables, plots, importances and observations of a real finished study; the analysis
logic on frames built by hand; studies without the data a part needs."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from dlas_dse import observations
from dlas_dse.plots import front_2d

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
    for title in observations.OBSERVATIONS:
        assert f"## {title}" in text
    threads = text.split("## More threads do not always help")[1]
    assert threads.split("\n")[2].startswith(("**holds**", "**does not hold**"))
    assert "1 threads" in threads and "2 threads" in threads and "architecture=" in threads
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
    assert result.returncode == 1 and "run `python -m dlas_dse optimize --study tiny` first" in result.stderr


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Completed trials built by hand: every row names its layer parameters and objectives."""
    base = {"state": "COMPLETE", "hardware.device": "host-cpu", "accuracy": 0.9, "size_bytes": 1e6}
    return pd.DataFrame([{"trial": i, **base, **row} for i, row in enumerate(rows)])


def test_tuning_that_changes_the_fastest_algorithm_is_found():
    rows = [{"model.architecture": "m", "threads_used": 2, "software.tuning": tuning, "algorithm.conv": conv,
             "latency_ms": latency}
            for tuning, conv, latency in [("untuned", "direct", 5.0), ("untuned", "gemm", 7.0),
                                          ("metaschedule", "direct", 4.0), ("metaschedule", "gemm", 2.0)]]
    found = {o.title: o for o in observations.compute(_frame(rows))}
    tuning = found["Auto-tuning changes which convolution algorithm is fastest"]
    assert tuning.verdict == observations.HOLDS and "1 of 1" in tuning.summary
    assert "untuned best direct, tuned best gemm (changed)" in tuning.evidence[0]
    same = [dict(r, latency_ms=9.0) if r["algorithm.conv"] == "gemm" else r for r in rows]
    assert observations.compute(_frame(same))[2].verdict == observations.DOES_NOT_HOLD


def test_sparse_threshold_and_compression_order():
    rows = [{"compression.technique": "weight_pruning", "compression.sparsity": s, "algorithm.conv": "gemm",
             "algorithm.format": f, "threads_used": 1, "latency_ms": latency}
            for s, f, latency in [(0.5, "dense", 4.0), (0.5, "sparse", 6.0), (0.9, "dense", 4.0), (0.9, "sparse", 2.0)]]
    sparse = observations.compute(_frame(rows))[3]
    assert sparse.verdict == observations.HOLDS and "from sparsity 0.9" in sparse.summary
    speeds = {("host-cpu", 1): {"none": 10.0, "int8": 5.0, "fp16": 8.0},
              ("board", 1): {"none": 10.0, "int8": 12.0, "fp16": 6.0}}
    rows = [{"hardware.device": device, "hardware.threads": threads, "threads_used": threads,
             "compression.technique": technique, "algorithm.format": "dense", "latency_ms": latency}
            for (device, threads), by_technique in speeds.items() for technique, latency in by_technique.items()]
    order = observations.compute(_frame(rows))[4]
    assert order.verdict == observations.HOLDS and "int8 on device=board" in order.summary


def test_observations_without_completed_trials_say_not_enough_data():
    frame = pd.DataFrame([{"trial": 0, "state": "FAIL"}])
    assert {o.verdict for o in observations.compute(frame)} == {observations.NOT_ENOUGH_DATA}


def test_front_2d_keeps_only_non_dominated_points():
    frame = pd.DataFrame({"latency_ms": [1.0, 2.0, 3.0, 2.5], "accuracy": [0.5, 0.8, 0.9, 0.7]})
    assert list(front_2d(frame, "latency_ms", "accuracy").index) == [0, 1, 2]
