"""Cross-validation and the tuner: the search space, two workers on one study, pruning, fold ensembles."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import datasets
from pipeline.errors import ConfigError
from pipeline.runs import registry
from pipeline.studies import tune
from tests.conftest import PROJECT_ROOT, TINY, UNTRACKED, run_make, start_make


def test_the_search_space_is_typed_by_the_config_keys():
    parameters = tune.parse_space(
        (
            "regularization.dropout=0.0..0.4",
            "model.units=16|32",
            "model.layers=1..3",
            "train.learning_rate=log:1e-4..1e-2",
            "model.name=bilstm|cnn_lstm",
            "train.early_stopping=true|false",
        )
    )
    assert [(p.key, p.kind) for p in parameters] == [
        ("regularization.dropout", "float"),
        ("model.units", "choice"),
        ("model.layers", "int"),
        ("train.learning_rate", "float"),
        ("model.name", "choice"),
        ("train.early_stopping", "choice"),
    ]
    assert parameters[1].choices == (16, 32) and parameters[3].log and parameters[5].choices == (True, False)
    for bad, message in (
        ("model.nope=1..2", "unknown config key"),
        ("model.units=5", "a range needs"),
        ("train.learning_rate=log:0..1", "low > 0"),
        ("regularization.dropout", "expected key="),
    ):
        with pytest.raises(ConfigError, match=message):
            tune.parse_space((bad,))


def test_the_best_trial_becomes_an_experiment_file_that_loads_back(tmp_path: Path):
    config = load_config(
        "experiments/default.toml",
        ["model.units=16", "regularization.dropout=0.25", "cv.folds=3", "data.validation_subjects=[3, 11]"],
    )
    path = tmp_path / "best.toml"
    path.write_text(tune.experiment_toml(config, "test"))
    assert load_config(path).to_dict() == {**config.to_dict(), "paths": load_config(path).to_dict()["paths"]}


def test_folds_of_the_real_classroom_data_hold_whole_subjects(prepared_root: Path):
    config = load_config(None, [f"paths.root={prepared_root}"])
    competition = datasets.open_competition(config)
    subjects = np.concatenate([competition.train.subjects, competition.validation.subjects])  # read from subject_*.csv
    assignment = datasets.fold_assignment(
        np.concatenate([competition.train.ids, competition.validation.ids]), subjects, 5, 4
    )
    assert len(np.unique(subjects)) == 21 and set(assignment) == {0, 1, 2, 3, 4}
    assert all(len(set(assignment[subjects == subject])) == 1 for subject in np.unique(subjects))
    data = datasets.load_training_data(load_config(None, [f"paths.root={prepared_root}", "cv.fold=2"]))
    # every series trains, chooses (an inner fold of the training part) or is scored (fold 2), once
    assert len(data.train_series) + len(data.validation_series) + len(data.scored_series) == len(subjects)
    assert set(data.subjects["scored_on"]) == set(subjects[assignment == 2]) and data.validation.startswith(
        "fold 2 of 5 (subjects)"
    )


def tune_settings(root: Path, *extra: str) -> str:
    return " ".join(
        [
            f"paths.root={root}",
            *TINY,
            "train.max_train_series=200",
            "cv.folds=2",
            "tune.space=['model.units=4|6|8','regularization.dropout=0.0..0.3']",
            "tune.heartbeat_seconds=1",
            "tune.grace_seconds=10",
            *extra,
        ]
    )


def finished_trials(study) -> list:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [trial for trial in study.get_trials() if trial.state in done]


def assert_no_epoch_twice(root: Path) -> None:
    for history in (root / "runs").glob("classroom_*/history.csv"):
        epochs = [line.split(",")[0] for line in history.read_text().splitlines()[1:]]
        assert len(epochs) == len(set(epochs)), history


@pytest.mark.slow
def test_workers_on_two_machines_share_one_postgresql_study(shared_data_root: Path, tmp_path: Path, postgres_url: str):
    """Two machines: separate project roots sharing only the prepared data and the database URL; the
    first runs two local workers (JOBS=2). A real PostgreSQL server, through psycopg."""
    import optuna

    first, second = shared_data_root, tmp_path / "second"
    second.mkdir()
    (second / "data").symlink_to((first / "data").resolve())
    workers = [
        start_make(
            tmp_path / f"worker{index}.log",
            "tune",
            *jobs,
            "TRIALS=3",
            f"STORAGE={postgres_url}",
            f"SET={tune_settings(root, 'train.epochs=1')}",
        )
        for index, (root, jobs) in enumerate(((first, ["JOBS=2"]), (second, [])))
    ]
    for index, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]
    study = optuna.load_study(study_name="classroom_default", storage=postgres_url)
    trials = study.get_trials()
    counted = [trial for trial in trials if "skipped" not in trial.user_attrs]
    assert len(finished_trials(study)) == 3 and len(counted) == 3  # every trial opened and trained was finished
    assert all(trial.state == optuna.trial.TrialState.FAIL for trial in trials if "skipped" in trial.user_attrs)
    # None trained twice: no fold run finished on both machines, no epoch twice in a run.
    finished = [
        {path.parent.name for path in (root / "runs").glob("classroom_*/metrics.json")} for root in (first, second)
    ]
    assert finished[0] and finished[1] and not finished[0] & finished[1]
    for root in (first, second):
        assert_no_epoch_twice(root)
    # The best trial is the same whichever worker reads it.
    best_files = [(root / "runs" / "tune" / "classroom_default.toml").read_text() for root in (first, second)]
    assert best_files[0] == best_files[1] and "CV selection score" in best_files[0]
    assert "against the runner-up, trial" in best_files[0] and "paired fold by fold" in best_files[0]
    # The best trial's cross-validation is one registry row where it ran, and its folds predict as an ensemble.
    best_trial = max((trial for trial in counted if trial.value is not None), key=lambda trial: trial.value)
    assert f"Best trial ({best_trial.number})" in best_files[0]
    cv_id = best_trial.user_attrs["cv_id"]
    root = first if (first / "runs" / cv_id).is_dir() else second
    table = registry.list_runs(root / "runs")
    row = table[table["run_id"] == cv_id].iloc[0]
    assert row["status"] == "complete" and row["select"] == pytest.approx(best_trial.value)
    predicted = run_make("predict", f"RUN=cv:{cv_id}", f"SET=paths.root={root}")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (lineage,) = (root / "submissions").glob("classroom_ensemble2_*.json")
    assert (
        json.loads(lineage.read_text())["runs"] == json.loads((root / "runs" / cv_id / "run.json").read_text())["folds"]
    )


def running_trials(url: str) -> int:
    import optuna

    try:
        study = optuna.load_study(study_name="classroom_default", storage=url)
    except KeyError:  # not created yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


# A tune worker killed hard (no cleanup, no goodbye to the database) after the second epoch of its first fold.
CRASHING_TUNE = """
import os, sys
import keras
from pipeline.runs import fitting
from pipeline.studies import tune
original = fitting.make_callbacks
class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == 2:
            os._exit(9)
fitting.make_callbacks = lambda *args, **kwargs: original(*args, **kwargs) + [Crash()]
sys.exit(tune.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_nothing(shared_data_root: Path, tmp_path: Path, postgres_url: str):
    import optuna

    root = shared_data_root
    settings = tune_settings(root, "train.patience=10")
    crasher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASHING_TUNE,
            "--exp=experiments/default.toml",
            UNTRACKED,
            f"--set=tune.storage={postgres_url}",
            "--set=tune.trials=1",
            "--sets",
            settings,
        ],
        cwd=PROJECT_ROOT,
        stdout=(tmp_path / "crasher.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    # The second worker joins once the first has opened the study's one trial, and watches it.
    deadline = time.monotonic() + 300
    while not running_trials(postgres_url) and crasher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    survivor = start_make(
        tmp_path / "survivor.log", "tune", "TRIALS=1", f"STORAGE={postgres_url}", "TRACKING=", f"SET={settings}"
    )
    assert crasher.wait(timeout=600) == 9, (tmp_path / "crasher.log").read_text()[-3000:]
    assert survivor.wait(timeout=600) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    study = optuna.load_study(study_name="classroom_default", storage=postgres_url)
    assert len(finished_trials(study)) == 1
    (killed,) = [
        trial
        for trial in study.get_trials()
        if trial.state == optuna.trial.TrialState.FAIL and "skipped" not in trial.user_attrs
    ]
    (retry,) = [
        trial
        for trial in study.get_trials()
        if trial.system_attrs.get("failed_trial") == killed.number  # RetryHeartbeatStaleTrialCallback's mark
    ]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == killed.params
    # The retry resumed the killed worker's first fold after its two finished epochs.
    fold = datasets.fold_config(
        load_config("experiments/default.toml", [*settings.split(" "), *killed.user_attrs["overrides"]]), 0
    )
    run_id = registry.run_id_for(fold)
    log = (tmp_path / "survivor.log").read_text()
    assert f"retrying trial {killed.number}" in log and f"resuming {run_id}" in log
    history = pd.read_csv(root / "runs" / run_id / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]  # epochs 1 and 2 from the killed worker, 3 from the retry
    assert_no_epoch_twice(root)
    # In MLflow (the survivor tracked): the killed trial failed, its retry finished and linked to its CV's folds.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/runs/mlflow.db")
    trials = client.search_runs([client.get_experiment_by_name("har/tune/classroom_default").experiment_id])
    by_trial = {run.data.tags["har.trial"]: run for run in trials}
    assert by_trial[str(killed.number)].info.status == "FAILED"
    mirrored = by_trial[str(retry.number)]
    assert mirrored.info.status == "FINISHED" and mirrored.data.tags["har.retry_of"] == str(killed.number)
    assert mirrored.data.metrics["selection_score"] == pytest.approx(retry.value)
    children = client.search_runs(
        [client.get_experiment_by_name("har/classroom").experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{mirrored.data.tags['har.cv_run']}'",
    )
    assert sorted(run.data.tags["har.run_id"] for run in children) == sorted(
        mirrored.data.tags["har.fold_runs"].split(",")
    )


def test_an_unreachable_database_is_one_line_naming_it(tmp_path: Path):
    from tests.postgres import free_port

    url = f"postgresql+psycopg://optuna:secret@127.0.0.1:{free_port()}/optuna"
    result = run_make("tune", "TRIALS=1", f"STORAGE={url}", f"SET=paths.root={tmp_path}")
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "cannot reach the database" in line and "127.0.0.1" in line and "secret" not in result.stderr
    assert not (tmp_path / "runs" / "tune").exists() or not list((tmp_path / "runs" / "tune").iterdir())


def test_a_pruned_trial_is_recorded_as_pruned(shared_data_root: Path, tmp_path: Path, capsys):
    import optuna

    root = shared_data_root
    overrides = [
        f"paths.root={root}",
        *TINY,
        "train.max_train_series=100",
        "cv.folds=2",
        "tune.space=['model.units=4..6']",
        "tracking.uri=off",
    ]
    config = load_config(None, overrides)
    # Any accuracy is below 1.01: the threshold pruner stops the first fold after its first epoch.
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/study.db",
        study_name="pruned",
        direction="maximize",
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),
    )
    tune.optimize(study, config, None, overrides, trials=1)
    assert re.search(r"^\[1/1\] trial 0: model.units=[456] \.\.\.$", capsys.readouterr().out, re.M)  # its progress line
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED and len(trial.intermediate_values) == 1
    table = registry.list_runs(root / "runs")
    assert list(table["status"]) == ["pruned"]
    marker = json.loads((Path(table["path"].iloc[0]) / "pruned.json").read_text())
    assert marker == {"study": "pruned", "trial": 0, "fold": 0, "epoch": 1}


def test_a_study_reopened_with_other_settings_is_refused(tmp_path: Path):
    first = load_config(None, [f"paths.root={tmp_path}", "train.epochs=5"])
    tune.check_base(tune.open_study(first, "s"), first, "s")
    tune.check_base(
        tune.open_study(first, "s"),
        load_config(None, [f"paths.root={tmp_path}", "train.epochs=5", "tune.trials=40"]),
        "s",
    )  # more trials: the same study
    other = load_config(None, [f"paths.root={tmp_path}", "train.epochs=9"])
    with pytest.raises(ConfigError, match="study s was run with other settings"):
        tune.check_base(tune.open_study(other, "s"), other, "s")
    old = tune.open_study(first, "old")  # a study from before nested selection: a base, no protocol
    old.set_user_attr("base", "0123456789abcdef")
    with pytest.raises(ConfigError, match="study old was run before nested selection"):
        tune.check_base(tune.open_study(first, "old"), first, "old")


@pytest.mark.slow
def test_cv_refit_trains_on_every_labeled_series_for_the_cv_epoch_count(shared_data_root: Path):
    root = shared_data_root
    settings = " ".join(
        [
            f"paths.root={root}",
            "model.units=4",
            "train.epochs=2",
            "train.noise_seeds=1",
            "train.verbose=0",
            "train.max_train_series=0",
        ]
    )
    result = run_make("cv", "FOLDS=2", "REFIT=1", "EXP=experiments/baseline.toml", f"SET={settings}")
    assert result.returncode == 0, result.stderr[-3000:]
    (cv_entry,) = [path for path in (root / "runs").glob("classroom_cv2_*") if path.is_dir()]
    lineage, metrics = (json.loads((cv_entry / name).read_text()) for name in ("run.json", "metrics.json"))
    assert lineage["kind"] == "cv" and len(lineage["folds"]) == 2 and len(metrics["selection"]["folds"]) == 2
    refit = root / "runs" / lineage["refit"]
    refit_lineage, refit_metrics = (json.loads((refit / name).read_text()) for name in ("run.json", "metrics.json"))
    competition = datasets.open_competition(load_config(None, [f"paths.root={root}"]))
    assert refit_lineage["train_series"] == len(competition.train) + len(competition.validation)  # nothing held out
    assert (
        refit_metrics["epochs_run"] == metrics["best_epoch"]
        and refit_metrics["selection"] is None
        and refit_metrics["validation"] == {}
    )


def test_the_best_trial_is_paired_with_the_runner_up_fold_by_fold():
    from types import SimpleNamespace

    from pipeline.studies.tune import against_runner_up

    def trial(number: int, folds: list[float]) -> SimpleNamespace:
        attrs = {"fold_scores": folds, "held_out_per_train": 0.25}
        return SimpleNamespace(number=number, value=sum(folds) / len(folds), user_attrs=attrs)

    hard_and_easy = [0.86, 0.95, 0.97, 0.88, 0.96]  # folds differ far more than the trials do
    steady = trial(
        3, [score + 0.01 + jitter for score, jitter in zip(hard_and_easy, (0.001, -0.001, 0.002, 0, -0.002))]
    )
    line = against_runner_up([trial(1, hard_and_easy), steady, trial(2, [s - 0.02 for s in hard_and_easy])])
    assert line.startswith("against the runner-up, trial 1") and ": trial 3 ahead; " in line and "optimistic" in line
    mixed = against_runner_up([trial(1, [0.9, 0.95]), trial(2, [0.92, 0.94])])
    assert (
        "runner-up, trial 1 (CV 0.9250)" in mixed and ": too few pairs to rank; " in mixed
    )  # trial 2 is best; 2 folds
    assert against_runner_up([steady]).startswith("no runner-up")
