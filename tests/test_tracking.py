"""MLflow: every run, CV and report mirrored into a real SQLite store, read back through MlflowClient;
`make ui` serving it over its REST API; a tracking server that is down costs one warning line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.files import sha256_file
from pipeline.runs import tracking
from tests.conftest import TINY, TrackedCVs, run_make, start_make
from tests.postgres import free_port


def test_parameters_and_metrics_are_named_as_mlflow_accepts():
    params = tracking.flat_params(
        {"paths": {"root": "/x"}, "model": {"units": 8, "front_end": [3, 9]}, "data": {"name": "a"}}
    )
    assert params == {"model.units": "8", "model.front_end": "[3, 9]", "data.name": "a"}  # paths: where, not what
    metrics = tracking.score_metrics(
        {
            "best_epoch": 3,
            "validation": {"0.5": {"mean": 0.8, "std": 0.01}},
            "selection": {"score": 0.79, "definition": {}},
            "test": {"noise_levels": {"0.5": {"mean": 0.7, "std": 0.0}}, "competition_file": 0.71},
            "best_validation": None,
        }
    )
    assert metrics == {
        "best_epoch": 3.0,
        "val_noise_0.5": 0.8,
        "val_noise_0.5_std": 0.01,
        "selection_score": 0.79,
        "test_noise_0.5": 0.7,
        "test_file": 0.71,
    }
    assert tracking.shown("postgresql://user:secret@host/db") == "postgresql://user:***@host/db"
    assert tracking.tracking_uri(load_config(None, ["tracking.uri=off"])) is None
    assert tracking.tracking_uri(load_config(None, ["paths.root=/p"])) == "sqlite:////p/runs/mlflow.db"


def test_a_tracking_uri_without_a_scheme_is_refused():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="tracking.uri='localhost:5000'"):
        load_config(None, ["tracking.uri=localhost:5000"])


@pytest.mark.slow
def test_a_cv_and_its_report_in_mlflow_and_make_ui_serves_them(tracked_cvs: TrackedCVs, tmp_path: Path):
    """The session's two CVs, trained and one fold evaluated with TRACKING= (tests/conftest.py); read only."""
    from mlflow import MlflowClient

    root = tracked_cvs.root
    cv_dirs = [root / "runs" / cv_id for cv_id in tracked_cvs.ids]
    cv_folds = {cv_dir.name: json.loads((cv_dir / "run.json").read_text())["folds"] for cv_dir in cv_dirs}
    evaluated = tracked_cvs.evaluated

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/runs/mlflow.db")
    experiment = client.get_experiment_by_name("har/classroom")
    mirrored = {run.data.tags["har.run_id"]: run for run in client.search_runs([experiment.experiment_id])}
    assert set(mirrored) == {*cv_folds, *(fold for folds in cv_folds.values() for fold in folds)}
    for cv_id, folds in cv_folds.items():
        cv_run = mirrored[cv_id]
        for fold in folds:
            run, run_dir = mirrored[fold], root / "runs" / fold
            # Parameters are the run's config.json, metrics its metrics.json and history.csv.
            assert run.data.params == tracking.flat_params(json.loads((run_dir / "config.json").read_text()))
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert run.data.metrics["selection_score"] == pytest.approx(metrics["selection"]["score"])
            assert run.data.metrics["val_noise_0.5"] == pytest.approx(metrics["validation"]["0.5"]["mean"])
            assert run.data.metrics["test_file"] == pytest.approx(metrics["test"]["competition_file"])
            history = pd.read_csv(run_dir / "history.csv")
            curve = client.get_metric_history(run.info.run_id, "epoch_val_noisy_accuracy")
            assert [point.step for point in curve] == list(history["epoch"])
            assert [point.value for point in curve] == pytest.approx(list(history["val_noisy_accuracy"]))
            card = root / "data" / "processed" / "classroom" / "datacard.json"
            assert run.data.tags["har.kind"] == "fold" and run.data.tags["har.data_card"] == sha256_file(card)[:16]
            assert run.data.tags["har.backend"] == "tensorflow" and run.data.tags["har.competition"] == "classroom"
            assert run.data.tags["mlflow.parentRunId"] == cv_run.info.run_id  # the folds are the CV's children
            assert {"model.keras", "metrics.json", "config.json", "history.csv"} <= {
                artifact.path for artifact in client.list_artifacts(run.info.run_id)
            }
        folds_scores = client.get_metric_history(cv_run.info.run_id, "fold_selection_score")
        cv_metrics = json.loads((root / "runs" / cv_id / "metrics.json").read_text())
        assert [point.value for point in folds_scores] == pytest.approx(cv_metrics["selection"]["folds"])
        assert cv_run.data.tags["har.kind"] == "cv" and cv_run.data.tags["har.folds"] == ",".join(folds)
    # make evaluate added its report and figures to the fold it evaluated.
    report = {artifact.path for artifact in client.list_artifacts(mirrored[evaluated].info.run_id, "report")}
    assert {"report/report.md", "report/confusion_matrix.png", "report/noise_curve.png"} <= report
    local = client.download_artifacts(mirrored[evaluated].info.run_id, "report/report.md", str(tmp_path))
    assert Path(local).read_text() == (root / "reports" / evaluated / "report.md").read_text()

    # make ui: the MLflow server on a free loopback port lists the runs just trained through its REST API.
    port = free_port()
    server = start_make(
        tmp_path / "ui.log", "ui", f"PORT={port}", "TRACKING=", f"SET=paths.root={root}", new_session=True
    )
    try:
        listed = search_runs_when_up(port, experiment.experiment_id, server, tmp_path / "ui.log")
        assert {run["info"]["run_name"] for run in listed} == set(mirrored)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def search_runs_when_up(port: int, experiment_id: str, server: subprocess.Popen, log: Path) -> list[dict]:
    request = json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            reply = urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
                    data=request,
                    headers={"Content-Type": "application/json"},
                ),
                timeout=5,
            )
            return json.loads(reply.read())["runs"]
        except OSError:
            time.sleep(1)
    raise AssertionError(f"make ui did not answer on port {port}: {log.read_text()[-3000:]}")


def test_a_tracking_server_that_is_down_costs_one_warning_and_the_run_finishes(tmp_path: Path, shared_data_root: Path):
    root = shared_data_root
    down = f"http://127.0.0.1:{free_port()}"
    result = run_make("train", f"TRACKING={down}", f"SET=paths.root={root} {' '.join(TINY)} train.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "tracking" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: MLflow tracking to {down} failed")
    (run_dir,) = [path for path in (root / "runs").iterdir() if path.is_dir()]
    assert (run_dir / "metrics.json").is_file() and not (root / "runs" / "mlflow.db").exists()


def test_a_peer_table_becomes_one_mlflow_run_per_row_with_its_report(tmp_path: Path):
    from mlflow import MlflowClient

    config = load_config(None, [f"paths.root={tmp_path}"])
    report = tmp_path / "peers.md"
    report.write_text("| peer |\n")
    rows = [
        {
            "name": "minirocket, 1 noised copies",
            "val@0.5": 0.91,
            "test file": 0.9,
            "fit seconds": 3.0,
            "params": {"peer": "minirocket"},
        },
        {"name": "random_forest, 0 noised copies", "val@0.5": 0.85, "test file": float("nan"), "params": {}},
    ]
    tracking.mirror_table(config, "peer", rows, [report])
    tracking.mirror_table(config, "peer", rows, [report])  # again: replaced, not doubled
    client = MlflowClient(tracking_uri=tracking.tracking_uri(config))
    runs = client.search_runs([client.get_experiment_by_name("har/classroom").experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    assert sorted(by_name) == ["peer: minirocket, 1 noised copies", "peer: random_forest, 0 noised copies"]
    minirocket = by_name["peer: minirocket, 1 noised copies"]
    assert minirocket.data.metrics == {"val_noise_0.5": 0.91, "test_file": 0.9, "fit_seconds": 3.0}
    assert minirocket.data.params == {"peer": "minirocket"} and minirocket.data.tags["har.kind"] == "peer"
    assert "test_file" not in by_name["peer: random_forest, 0 noised copies"].data.metrics  # NaN left out
    assert [artifact.path for artifact in client.list_artifacts(minirocket.info.run_id)] == ["peers.md"]
    assert (tmp_path / "runs" / "mlflow-artifacts").is_dir()  # artifacts beside the embedded store


def test_runs_made_without_mlflow_are_mirrored_by_the_backfill_once(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """make all leaves MLflow out: a run finished then is not mirrored and nothing is printed; make ui
    (which installs MLflow) mirrors it, and a second backfill adds nothing."""
    from mlflow import MlflowClient

    root = tmp_path / "root"
    (root / "runs").mkdir(parents=True)
    shutil.copytree(tiny_run, root / "runs" / tiny_run.name)
    config = load_config(None, [f"paths.root={root}"])  # the project's own store, runs/mlflow.db
    monkeypatch.setattr(tracking, "installed", lambda: False)
    assert tracking.mirror_run(config, root / "runs" / tiny_run.name) is None
    assert capsys.readouterr().err == "" and not (root / "runs" / "mlflow.db").exists()
    monkeypatch.undo()
    # a provisional mirror logged epoch by epoch while it trained (LiveCurves) is replaced, not doubled
    tracking.log_epoch(config, {}, tiny_run.name, "classroom", 0, {"loss": 1.5})
    assert tracking.backfill(config) == 1
    assert tracking.backfill(config) == 1  # looked at again, found, left as it is
    client = MlflowClient(tracking_uri=tracking.tracking_uri(config))
    mirrors = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string=f"tags.`har.run_id` = '{tiny_run.name}'",
    )
    assert len(mirrors) == 1 and mirrors[0].data.metrics["selection_score"] > 0
    assert tracking.LIVE not in mirrors[0].data.tags and "har.metrics_hash" in mirrors[0].data.tags


def test_each_epoch_reaches_mlflow_as_it_ends_and_a_resumed_run_goes_on_in_the_same_mirror(tmp_path: Path):
    import keras
    import numpy as np
    from mlflow import MlflowClient

    from pipeline.runs.fitting import LiveCurves

    config = load_config(None, [f"paths.root={tmp_path}"])
    (tmp_path / "runs").mkdir()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    series, labels = np.zeros((8, 3), "float32"), keras.utils.to_categorical(np.arange(8) % 2, 2)
    seen = []

    class Watch(keras.callbacks.Callback):  # what the store holds when each epoch has ended
        def on_epoch_end(self, epoch, logs=None):
            client = MlflowClient(tracking_uri=tracking.tracking_uri(config))
            (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`har.live` = '1'")
            seen.append(len(client.get_metric_history(run.info.run_id, "epoch_loss")))

    model.fit(series, labels, epochs=3, verbose=0, callbacks=[LiveCurves(config, "run_x"), Watch()])
    assert seen == [1, 2, 3]  # live: epoch n's loss was in the store before epoch n + 1 began
    model.fit(series, labels, epochs=2, verbose=0, callbacks=[LiveCurves(config, "run_x")])  # a new process resuming
    client = MlflowClient(tracking_uri=tracking.tracking_uri(config))
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`har.run_id` = 'run_x'")
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "epoch_accuracy")] == [0, 1, 2, 0, 1]
