"""Cross-validation and the tuner: the search space, two workers on one study, pruning, fold ensembles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data import datasets
from pipeline.errors import ConfigError
from pipeline.stages import runs
from pipeline.studies import tune
from tests.conftest import TINY, run_make


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
    assert len(data.train_series) + len(data.validation_series) == len(subjects) and data.validation.startswith(
        "fold 2 of 5 (subjects)"
    )


@pytest.mark.slow
def test_two_workers_share_one_study_and_the_folds_predict_as_an_ensemble(shared_data_root: Path):
    import optuna

    root = shared_data_root
    settings = " ".join(
        [
            f"paths.root={root}",
            *TINY,
            "train.epochs=1",
            "train.max_train_series=200",
            "cv.folds=2",
            "tune.space=['model.units=4|6|8','regularization.dropout=0.0..0.3']",
        ]
    )
    result = run_make("tune", "JOBS=2", "TRIALS=2", f"SET={settings}")
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(
        study_name="classroom_default", storage=f"sqlite:///{root}/runs/tune/classroom_default.db"
    )
    trials = sorted(study.get_trials(), key=lambda trial: trial.number)
    counted = [trial for trial in trials if "skipped" not in trial.user_attrs]
    assert [trial.number for trial in counted] == [0, 1]
    assert all(trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for trial in counted)
    assert all(trial.state == optuna.trial.TrialState.FAIL for trial in trials if "skipped" in trial.user_attrs)
    # No run trained twice: every fold run's history has each epoch once.
    for history in (root / "runs").glob("classroom_*/history.csv"):
        epochs = [line.split(",")[0] for line in history.read_text().splitlines()[1:]]
        assert len(epochs) == len(set(epochs)), history
    best = root / "runs" / "tune" / "classroom_default.toml"
    assert "CV selection score" in best.read_text() and load_config(best).cv.folds == 2
    # The best trial's cross-validation is one registry row, and its folds predict as an ensemble.
    best_trial = max((trial for trial in counted if trial.value is not None), key=lambda trial: trial.value)
    cv_id = best_trial.user_attrs["cv_id"]
    table = runs.list_runs(root / "runs")
    row = table[table["run_id"] == cv_id].iloc[0]
    assert row["status"] == "complete" and row["select"] == pytest.approx(best_trial.value)
    predicted = run_make("predict", f"RUN=cv:{cv_id}", f"SET=paths.root={root}")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (lineage,) = (root / "submissions").glob("classroom_ensemble2_*.json")
    assert (
        json.loads(lineage.read_text())["runs"] == json.loads((root / "runs" / cv_id / "run.json").read_text())["folds"]
    )


def test_a_pruned_trial_is_recorded_as_pruned(shared_data_root: Path, tmp_path: Path):
    import optuna

    root = shared_data_root
    overrides = [
        f"paths.root={root}",
        *TINY,
        "train.max_train_series=100",
        "cv.folds=2",
        "tune.space=['model.units=4..6']",
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
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED and len(trial.intermediate_values) == 1
    table = runs.list_runs(root / "runs")
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
