"""The noise-aware blend (pipeline.models.blend): the gate's fit on tiny arrays, the folds each gate
reads, and the blend pickled without its Keras members."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.signals import NoiseLevelEstimator
from pipeline.errors import DataError
from pipeline.models.blend import GATE_LEVELS, BlendModel, NoiseGate, fit_gate, gate_training_set
from pipeline.runs import registry
from tests.conftest import CV_BASE, CV_VARIANTS, TrackedCVs, run_make


def one_hot_guesses(labels: np.ndarray, right: np.ndarray, classes: int, sure: float = 0.9) -> np.ndarray:
    """Probabilities sure of the true class where `right`, of the next class elsewhere."""
    guessed = np.where(right, labels, (labels + 1) % classes)
    probabilities = np.full((len(labels), classes), (1 - sure) / (classes - 1))
    probabilities[np.arange(len(labels)), guessed] = sure
    return probabilities


def test_the_gate_hands_clean_series_to_one_member_and_noisy_ones_to_the_other():
    """Member 0 is right on clean series only (MiniRocket's shape), member 1 on 80% at every level:
    the fitted gate trusts member 0 at noise 0 and member 1 at 1.5, and the blend beats both."""
    rng = np.random.default_rng(0)
    levels = np.repeat(np.array(GATE_LEVELS), 200)
    labels = rng.integers(0, 3, len(levels))
    clean_expert = one_hot_guesses(labels, levels < 0.4, 3)
    steady = one_hot_guesses(labels, rng.random(len(levels)) < 0.8, 3)
    gate = fit_gate([clean_expert, steady], labels, levels)
    weights = gate.weights(np.array(GATE_LEVELS))
    assert weights[0, 0] > 0.6 and (weights[2:, 1] > 0.85).all(), weights  # from 0.5 on, member 0 is always wrong
    np.testing.assert_allclose(weights.sum(1), 1.0)
    blended = (gate.blend([clean_expert, steady], levels).argmax(1) == labels).mean()
    assert blended > (steady.argmax(1) == labels).mean() + 0.02 and blended > (clean_expert.argmax(1) == labels).mean()


def test_a_member_ahead_everywhere_takes_the_weight_and_the_numbers_stay_finite():
    rng = np.random.default_rng(1)
    levels = rng.uniform(0, 1.5, 400)
    labels = rng.integers(0, 4, 400)
    perfect, poor = one_hot_guesses(labels, np.ones(400, bool), 4), one_hot_guesses(labels, rng.random(400) < 0.3, 4)
    gate = fit_gate([poor, perfect], labels, levels)
    assert np.isfinite(gate.coefficients).all() and np.isfinite(gate.sharpness).all()
    assert (gate.coefficients[0] == 0).all()  # the first member is the reference
    assert (gate.weights(levels)[:, 1] > 0.8).all()
    with pytest.raises(ValueError, match="two members"):
        fit_gate([perfect], labels, levels)


def ridge_like(labels: np.ndarray, right: np.ndarray, classes: int, margin: float) -> np.ndarray:
    """A ridge's softmax scores (pipeline.models.rocket): the voted class only `margin` above the rest."""
    guessed = np.where(right, labels, (labels + 1) % classes)
    scores = np.zeros((len(labels), classes))
    scores[np.arange(len(labels)), guessed] = margin
    return np.exp(scores) / np.exp(scores).sum(1, keepdims=True)


def test_the_gate_calibrates_a_too_soft_member_and_keeps_it_up_to_where_it_collapses():
    """MiniRocket's shape on raw: soft ridge scores, ahead up to noise 0.75, collapsed from 1.0; the
    recurrent member sure of itself and steady. The gate's temperature sharpens the soft member
    until its confidence matches its accuracy, and its weight holds up to 0.5 then falls: the blend
    is level with the better member at 0, 0.5 and 1.5."""
    rng = np.random.default_rng(5)
    levels = np.repeat(np.array(GATE_LEVELS), 400)
    labels = rng.integers(0, 6, len(levels))
    steady = one_hot_guesses(labels, rng.random(len(levels)) < 0.85, 6, sure=0.95)
    ridge = ridge_like(labels, rng.random(len(levels)) < np.where(levels <= 0.75, 0.96, 0.3), 6, margin=0.4)
    gate = fit_gate([steady, ridge], labels, levels)
    calibrated = gate.calibrated([steady, ridge])[1]
    clean = levels <= 0.75
    assert gate.sharpness[1] > 3  # 0.4 of margin said 0.25: it is right 96% of the time there
    assert abs(calibrated[clean].max(1).mean() - 0.96) < 0.15
    weights = gate.weights(np.array([0.0, 0.5, 1.5]))
    assert weights[0, 1] > 0.5 and weights[1, 1] > 0.5 and weights[2, 1] < 0.2, weights
    blended = gate.blend([steady, ridge], levels).argmax(1) == labels
    for level in (0.0, 0.5, 1.5):
        at = levels == level
        best = max((member[at].argmax(1) == labels[at]).mean() for member in (steady, ridge))
        assert blended[at].mean() >= best - 0.02, (level, blended[at].mean(), best)


def test_a_gate_pickled_before_splines_and_temperatures_reads_as_it_was_fitted():
    old = NoiseGate.__new__(NoiseGate)
    old.__setstate__({"intercepts": np.array([0.0, 1.0]), "slopes": np.array([0.0, -2.0])})
    expected = np.exp([0.0, 1.0 - 2.0 * 0.5])
    np.testing.assert_allclose(old.weights(np.array([0.5]))[0], expected / expected.sum())
    np.testing.assert_allclose(old.calibrated([np.array([[0.3, 0.7]])])[0], [[0.3, 0.7]])


def test_the_gate_training_set_holds_every_series_at_every_level():
    rng = np.random.default_rng(2)
    series = np.cumsum(rng.normal(size=(20, 64, 3)), axis=1) * 0.1  # smooth, like sensor signals
    labels = rng.integers(0, 2, 20)
    unit = series.reshape(-1, 3).std(0)
    noised, repeated, levels = gate_training_set(series, labels, "gaussian", unit, seed=0)
    assert noised.shape == (20 * len(GATE_LEVELS), 64, 3) and (repeated == np.tile(labels, len(GATE_LEVELS))).all()
    np.testing.assert_array_equal(noised[:20], series)  # level 0 is the clean series
    estimated = NoiseLevelEstimator.fit(series, unit).levels(noised)
    by_level = [estimated[levels == level].mean() for level in GATE_LEVELS]
    assert np.all(np.diff(by_level) > 0)  # what the gate reads rises with the true level


class Constant:
    """A stand-in member with Keras' predict signature."""

    def __init__(self, probabilities: list[float]):
        self.probabilities = np.array(probabilities)

    def predict(self, series: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        return np.tile(self.probabilities, (len(series), 1))


def test_a_blend_pickles_without_its_keras_members_and_predicts_the_same_with_them_put_back():
    rng = np.random.default_rng(3)
    series = rng.normal(size=(6, 16, 2))
    estimator = NoiseLevelEstimator.fit(np.cumsum(series, axis=1) * 0.05, np.ones(2))
    gate = NoiseGate(np.array([[0.0] * 5, [0.5, 0.2, -0.3, -1.0, -2.0]]), np.array([1.0, 2.0]))
    keras_like, peer = Constant([0.7, 0.3]), Constant([0.2, 0.8])
    blend = BlendModel([keras_like, peer], ["fold_run", "peer:logistic_regression"], gate, estimator, keras_members=[0])
    expected = blend.predict(series)
    weights = gate.weights(estimator.levels(series))
    sharpened = np.array([0.2, 0.8]) ** 2 / (0.2**2 + 0.8**2)  # the peer at temperature 1/2
    np.testing.assert_allclose(expected, weights[:, :1] * [0.7, 0.3] + weights[:, 1:] * sharpened)
    restored = pickle.loads(pickle.dumps(blend))
    assert restored.members[0] is None and isinstance(restored.members[1], Constant)
    np.testing.assert_allclose(restored.with_keras_members({0: keras_like}).predict(series), expected)


# ---- make blend end to end, on the session's two CVs (tests/conftest.py) ---------------------------------


@pytest.mark.slow
def test_make_blend_is_a_cv_entry_scored_on_folds_that_chose_nothing_and_a_run_to_predict_evaluate_and_record(
    tracked_cvs: TrackedCVs, shared_data_root: Path, tmp_path: Path
):
    from pipeline.data import datasets
    from pipeline.phone import formats, recording
    from pipeline.runs.folder import RunFolder
    from tests.test_cv_compare import recorded_fold_scores, selection_accuracy
    from tests.test_recording import app_recording

    root = shared_data_root
    shutil.copytree(tracked_cvs.root / "runs", root / "runs", ignore=shutil.ignore_patterns("mlflow*"))
    cv_id = tracked_cvs.ids[1]
    made = run_make("blend", f"RUN=cv:{cv_id} peer:logistic_regression", f"SET=paths.root={root}")
    assert made.returncode == 0, made.stderr[-3000:]
    assert made.stdout.count("gate weights at noise 0 / 0.5 / 1") == 4, made.stdout
    (blend_cv,) = [path.name for path in (root / "runs").glob("classroom_cv2x2_blend2_*")]
    entry = RunFolder(root / "runs" / blend_cv).lineage()
    member_folds = RunFolder(root / "runs" / cv_id).lineage().folds
    assert entry.kind == "cv" and entry.members == [cv_id, "peer:logistic_regression"] and len(entry.folds) == 4
    config = load_config(None, [f"paths.root={root}", *CV_BASE])
    held_out = {
        fold: json.loads((root / "runs" / fold / "split.json").read_text())["subjects"]["scored_on"]
        for fold in member_folds
    }
    for fold_blend, member in zip(entry.folds, member_folds):
        folder = RunFolder(root / "runs" / fold_blend)
        lineage, metrics = folder.lineage(), folder.metrics()
        assert lineage.kind == "blend" and lineage.members == [member, "peer:logistic_regression"]
        # the member's own split: the peer fitted on what the member trained on, scored on the
        # held-out fold that chose nothing, with the member's selection
        split = json.loads(folder.split_file.read_text())
        assert split == json.loads((root / "runs" / member / "split.json").read_text())
        # the peer fitted as cv-compare fits it: on what the member trained and chose on
        assert metrics["peers"]["logistic_regression"]["series"] == len(split["trained_on"]) + len(split["chosen_on"])
        member_selection = RunFolder(root / "runs" / member).metrics()["selection"]
        assert metrics["selection"]["definition"] == member_selection["definition"]
        assert metrics["selection"]["series"]["chosen_on"] == len(split["chosen_on"])
        # the gate: fitted on the held-out series of every member fold that shares none of this
        # fold's (at least the other fold of its repeat), never on the series it is scored on
        scored = split["subjects"]["scored_on"]
        apart = [other for other in member_folds if other != member and not set(held_out[other]) & set(scored)]
        assert member_folds[member_folds.index(member) ^ 1] in apart
        assert metrics["gate"]["fitted_on_runs"] == apart
        assert metrics["gate"]["fitted_on_held_out"] == sorted({s for other in apart for s in held_out[other]}, key=str)
        model = folder.load_model()
        np.testing.assert_allclose(model.gate.coefficients, metrics["gate"]["coefficients"])
        np.testing.assert_allclose(1 / model.gate.sharpness, metrics["gate"]["temperatures"])
        fold_config = registry.run_config(config, folder.path)
        data = datasets.load_training_data(fold_config)
        assert metrics["selection"]["score"] == pytest.approx(
            selection_accuracy(model, data, metrics["selection"]["definition"])
        )
        # what the fold blend kept for the refit's gate: its members' predictions on its held-out series
        saved = folder.out_of_fold()
        series, labels, _ = gate_training_set(
            data.scored_series,
            data.scored_labels,
            fold_config.data.noise_profile,
            data.train_std,
            fold_config.train.seed,
        )
        np.testing.assert_array_equal(saved["labels"], labels)
        np.testing.assert_allclose(saved["levels"], model.estimator.levels(series))
        for index, member in enumerate(model.members):
            np.testing.assert_allclose(saved[f"member_{index}"], member.predict(series, verbose=0), atol=1e-5)
        assert sorted(saved["held_out"].tolist()) == sorted(scored)
    # REFIT=1: refused in one line while the member CV has no refit run; then, after make cv REFIT=1,
    # the blend refit on every labeled series, named by the entry, its gate fitted on all four folds
    refused = run_make("blend", f"RUN=cv:{cv_id} peer:logistic_regression", "REFIT=1", f"SET=paths.root={root}")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(errors) == 1 and "no refit run to blend" in errors[0], refused.stderr[-2000:]
    settings = " ".join([f"paths.root={root}", *CV_BASE, *CV_VARIANTS[1]])
    member_refit = run_make("cv", "FOLDS=2", "REPEATS=2", "REFIT=1", "TRACKING=off", f"SET={settings}")
    assert member_refit.returncode == 0, member_refit.stderr[-3000:]
    refit_member = RunFolder(root / "runs" / cv_id).lineage().refit
    made = run_make("blend", f"RUN=cv:{cv_id} peer:logistic_regression", "REFIT=1", f"SET=paths.root={root}")
    assert made.returncode == 0, made.stderr[-3000:]
    # the fold blends' kept predictions read, no fold's members loaded again
    assert made.stdout.count("out-of-fold predictions") == 4 and "the members of the fold" not in made.stdout
    refit_entry = RunFolder(root / "runs" / blend_cv).lineage()
    assert refit_entry.folds == entry.folds and refit_entry.refit is not None  # the fold blends were reused
    refit = RunFolder(root / "runs" / refit_entry.refit)
    refit_metrics, refit_split = refit.metrics(), json.loads(refit.split_file.read_text())
    assert refit.lineage().members == [refit_member, "peer:logistic_regression"] and refit_metrics["selection"] is None
    member_config = registry.run_config(config, root / "runs" / refit_member)
    assert member_config.cv.refit and refit_split["trained_on"] == [
        str(i) for i in datasets.load_training_data(member_config).train_ids
    ]
    assert refit_metrics["peers"]["logistic_regression"]["series"] == len(refit_split["trained_on"])
    assert refit_metrics["gate"]["fitted_on_runs"] == member_folds
    kept = [RunFolder(root / "runs" / fold).out_of_fold() for fold in entry.folds]
    gate = fit_gate(
        [np.concatenate([one[f"member_{index}"] for one in kept]) for index in range(2)],
        np.concatenate([one["labels"] for one in kept]),
        np.concatenate([one["levels"] for one in kept]),
    )
    np.testing.assert_allclose(refit_metrics["gate"]["coefficients"], gate.coefficients, rtol=1e-6)
    assert refit.out_of_fold() is None  # nothing held out
    predicted_refit = run_make("predict", f"RUN={refit.name}", f"SET=paths.root={root}")
    assert predicted_refit.returncode == 0, predicted_refit.stderr[-3000:]
    # paired with its member CV fold by fold
    paired = run_make("cv-compare", f"A={blend_cv}", f"B={cv_id}", f"SET=paths.root={root}")
    assert paired.returncode == 0, paired.stderr[-3000:]
    record = json.loads((root / "reports" / "cv_compare" / f"{blend_cv}__{cv_id}" / "comparison.json").read_text())
    np.testing.assert_allclose(
        record["differences"], np.subtract(recorded_fold_scores(root, blend_cv), recorded_fold_scores(root, cv_id))
    )
    # make predict averages the fold blends on the test file
    predicted = run_make("predict", f"RUN=cv:{blend_cv}", f"SET=paths.root={root}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (lineage_file,) = (root / "submissions").glob("classroom_ensemble4_*.json")
    assert json.loads(lineage_file.read_text())["runs"] == entry.folds
    probabilities = pd.read_csv(str(lineage_file).replace(".json", ".probabilities.csv"), dtype={"file": str})
    competition = datasets.open_competition(config)
    mean = np.mean(
        [RunFolder(root / "runs" / run).load_model().predict(competition.test.series) for run in entry.folds], 0
    )
    by_id = pd.DataFrame(mean, index=competition.test.ids).loc[probabilities["file"]].to_numpy()
    np.testing.assert_allclose(probabilities.filter(like="p_").to_numpy(), by_id, atol=1e-5)
    # make evaluate reports on a fold blend; make export refuses it in one line
    evaluated = run_make("evaluate", f"RUN={entry.folds[0]}", f"SET=paths.root={root}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    curve = pd.read_csv(root / "reports" / entry.folds[0] / "noise_curve.csv")
    assert "blend2" in set(curve["predictor"])
    exported = run_make("export", f"RUN={entry.folds[0]}", f"SET=paths.root={root}")
    errors = [line for line in exported.stderr.splitlines() if line.startswith("error:")]
    assert exported.returncode != 0 and len(errors) == 1 and "no LiteRT form" in errors[0], exported.stderr[-2000:]
    assert "Traceback" not in exported.stderr
    # a phone recording read by a fold blend
    _acc, _gyro, times, acc_ms2, app_gyro = app_recording(40)
    formats.write_phyphox(tmp_path / "walk", times, acc_ms2, app_gyro)
    target = recording.analyse(load_config(None, [f"paths.root={root}"]), tmp_path / "walk", [entry.folds[0]])
    windows = pd.read_csv(target / "windows.csv")
    assert len(windows) == 30
    np.testing.assert_allclose(windows.filter(like="p_").sum(axis=1), 1, atol=1e-4)


def test_a_blend_needs_a_cross_validation_and_a_known_peer(tmp_path: Path):
    from pipeline.stages import blend

    for names in (["peer:logistic_regression"], ["cv:some_cv"], ["cv:some_cv", "peer:lasso"]):
        with pytest.raises(DataError, match="a blend needs|unknown peer"):
            blend.split_members(names)
    with pytest.raises(DataError, match="appears twice"):
        blend.split_members(["cv:a", "peer:minirocket", "peer:minirocket"])
    assert blend.split_members(["cv:a", "b", "peer:minirocket+copies"]) == (["a", "b"], ["minirocket+copies"])


def test_each_fold_gate_reads_only_the_folds_whose_held_out_series_it_shares_none_of():
    """2 repeats x 3 folds of 6 subjects: within a repeat every other fold, across repeats only a
    disjoint one; a fold that shares its held-out series with every other fold is refused."""
    from pipeline.stages.blend import gate_sources

    held_out = [{1, 2}, {3, 4}, {5, 6}, {1, 3}, {2, 5}, {4, 6}]
    sources = gate_sources(held_out)
    assert sources[0] == [1, 2, 5] and sources[3] == [2, 4, 5]
    for index, found in enumerate(sources):
        assert found and all(not held_out[index] & held_out[other] for other in found)
    with pytest.raises(DataError, match="fold run 1: every other fold shares"):
        gate_sources([{1, 2}, {2, 3}])
