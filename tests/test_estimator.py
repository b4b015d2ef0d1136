"""RecurrentClassifier: the recurrent models as a scikit-learn estimator, trained by make train's own path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from pipeline.runs.estimator import RecurrentClassifier, as_series

TINY = {"train.epochs": 3, "model.units": 8}


def labeled_series(count: int = 180, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three classes a small BiLSTM separates in a few epochs (a mean per class), in 9 groups."""
    rng = np.random.default_rng(seed)
    labels = np.array(["sit", "stand", "walk"])[rng.integers(0, 3, count)]
    offset = {"sit": -1.5, "stand": 0.0, "walk": 1.5}
    series = rng.normal(size=(count, 12, 3)) + np.array([offset[label] for label in labels])[:, None, None]
    return series.astype(np.float32), labels, np.arange(count) % 9


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecurrentClassifier, Path]:
    series, labels, groups = labeled_series()
    work = tmp_path_factory.mktemp("estimator")
    aeon_layout = np.transpose(series, (0, 2, 1))
    model = RecurrentClassifier(settings=TINY, layout="channels_time", work_dir=str(work))
    return model.fit(aeon_layout, labels, groups=groups), work


def test_a_fitted_estimator_is_a_run_of_make_trains_path_chosen_on_held_out_groups(fitted):
    from pipeline.data.datasets import load_training_data

    model, work = fitted
    series, labels, groups = labeled_series()
    aeon_layout = np.transpose(series, (0, 2, 1))
    assert list(model.classes_) == ["sit", "stand", "walk"] and model.n_features_in_ == 3
    assert model.run_id_.startswith("estimator_bilstm_gn0.5_")  # the default experiment's noise layer
    assert (work / "runs" / model.run_id_ / "metrics.json").is_file()
    assert model.score(aeon_layout, labels) > 0.9  # chance is a third
    probabilities = model.predict_proba(aeon_layout[:5])
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    assert (model.classes_[probabilities.argmax(1)] == model.predict(aeon_layout[:5])).all()
    # the checkpoint was chosen on whole groups the model did not train on (fold 0 of 5)
    data = load_training_data(model.config(work))
    chosen, trained = set(data.subjects["chosen_on"]), set(data.subjects["trained_on"])
    assert chosen and trained and not chosen & trained and len(chosen | trained) == len(set(groups))
    assert model.get_params()["settings"] == TINY and model.set_params(verbose=1).verbose == 1


def test_it_pickles_and_saves_as_keras_with_the_same_answers(fitted, tmp_path: Path):
    from pipeline import models

    model, _ = fitted
    aeon_layout = np.transpose(labeled_series(40, seed=1)[0], (0, 2, 1))
    expected = model.predict_proba(aeon_layout)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(model)).predict_proba(aeon_layout), expected, atol=1e-6)
    saved = models.load_model(str(model.save(tmp_path / "model.keras")))
    np.testing.assert_allclose(saved.predict(np.transpose(aeon_layout, (0, 2, 1)), verbose=0), expected, atol=1e-6)


def test_wrong_shapes_are_one_line():
    with pytest.raises(ValueError, match=r"^X has shape \(4, 12\): RecurrentClassifier takes \(n series, time steps"):
        as_series(np.zeros((4, 12)), "time_channels")
    with pytest.raises(ValueError, match="the model was fitted on 12 x 3"):
        as_series(np.zeros((4, 3, 12)), "time_channels", expected=(12, 3))
    assert as_series(np.zeros((4, 3, 12)), "channels_time", expected=(12, 3)).shape == (4, 12, 3)
    with pytest.raises(ValueError, match="layout='nct'"):
        as_series(np.zeros((4, 3, 12)), "nct")
    with pytest.raises(ValueError, match="one class"):
        RecurrentClassifier().fit(np.zeros((6, 12, 3)), np.ones(6))


def test_cross_val_score_with_group_folds_and_a_pipeline():
    """scikit-learn clones and refits it per fold; a Pipeline puts a transformer in front of it."""
    series, labels, groups = labeled_series(120)
    estimator = make_pipeline(FunctionTransformer(lambda x: x * 2.0), RecurrentClassifier(settings=TINY))
    scores = cross_val_score(estimator, series, labels, groups=groups, cv=GroupKFold(2))
    assert len(scores) == 2 and (scores > 0.55).all(), scores  # chance is a third
    copy = clone(estimator)
    assert copy.get_params()["recurrentclassifier__settings"] == TINY and not hasattr(copy[-1], "model_")
