"""Paired comparison of cross-validated configurations (make cv-compare) and repeated k-fold CV."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.data import datasets
from pipeline.errors import DataError
from pipeline.runs import registry
from pipeline.stages.cv_compare import paired_comparison
from tests.conftest import CV_BASE, TrackedCVs, run_make

# Five folds of subjects, three repeats: fold difficulty spreads the scores over 0.86-0.97, as on raw windows.
DIFFICULTY = np.array([0.86, 0.96, 0.97, 0.89, 0.95, 0.88, 0.97, 0.94, 0.96, 0.87, 0.95, 0.90, 0.86, 0.97, 0.96])


def test_the_corrected_t_test_on_a_worked_example():
    """Worked by hand (Nadeau and Bengio 2003; Bouckaert and Frank 2004): differences 0.01..0.05 over
    5 folds, 1 held-out series per 4 trained on. Mean 0.03; sample variance 0.00025; corrected
    variance (1/5 + 1/4) x 0.00025 = 1.125e-4, so the scale is 0.0106066 and t = 2.8284; with 4 degrees
    of freedom t(0.975) = 2.7764 (a t table), so the interval is 0.03 +- 0.029449; two-sided p = 0.0474."""
    a = np.array([0.91, 0.92, 0.93, 0.94, 0.95])
    result = paired_comparison(a, a - [0.01, 0.02, 0.03, 0.04, 0.05], held_out_per_train=0.25)
    assert result.mean == pytest.approx(0.03)
    assert result.t == pytest.approx(2.8284, abs=1e-4)
    assert (result.low, result.high) == pytest.approx((0.03 - 0.029449, 0.03 + 0.029449), abs=2e-6)
    assert result.p == pytest.approx(0.0474, abs=1e-4) and result.verdict == "A ahead"
    # the plain paired t-test (no correction) would be far more confident: scale 0.0070711, t = 4.2426
    assert paired_comparison(a, a - [0.01, 0.02, 0.03, 0.04, 0.05], 0.0).t == pytest.approx(4.2426, abs=1e-4)


def test_a_small_consistent_difference_is_separated_paired_though_the_unpaired_spreads_overlap():
    rng = np.random.default_rng(0)
    a = DIFFICULTY + rng.normal(0, 0.002, len(DIFFICULTY))
    b = a - 0.01 + rng.normal(0, 0.003, len(DIFFICULTY))  # B loses about a point on every fold
    # Unpaired, the two means are far inside each other's spread over folds: nothing to rank.
    assert abs(a.mean() - b.mean()) < 0.25 * min(a.std(), b.std())
    result = paired_comparison(a, b, held_out_per_train=1 / 4)
    assert result.verdict == "A ahead" and 0 < result.low < result.mean < result.high
    assert result.mean == pytest.approx(0.01, abs=0.003)
    assert paired_comparison(b, a, held_out_per_train=1 / 4).verdict == "B ahead"


def test_differences_that_change_sign_are_not_separated():
    rng = np.random.default_rng(1)
    a = DIFFICULTY
    b = DIFFICULTY + rng.normal(0, 0.01, len(DIFFICULTY))
    result = paired_comparison(a, b, held_out_per_train=1 / 4)
    assert result.verdict == "not separated" and result.low < 0 < result.high


def test_the_correction_for_overlapping_training_sets_widens_the_interval():
    """Nadeau and Bengio's term n_held_out / n_train: without it the plain paired t-test is too confident."""
    rng = np.random.default_rng(2)
    a = DIFFICULTY
    b = DIFFICULTY - 0.004 + rng.normal(0, 0.01, len(DIFFICULTY))
    plain, corrected = paired_comparison(a, b, 0.0), paired_comparison(a, b, 1 / 4)
    assert corrected.high - corrected.low > 2 * (plain.high - plain.low)
    assert plain.mean == corrected.mean and abs(corrected.t) < abs(plain.t)


def test_fewer_than_five_differences_or_none_that_vary_give_no_ranking():
    from pipeline.stages.cv_compare import NO_SPREAD, TOO_FEW

    a = np.array([0.90, 0.95, 0.91, 0.94])
    result = paired_comparison(a, a - [0.05, 0.04, 0.06, 0.05], 0.1)  # four folds, all clearly ahead
    assert result.verdict == TOO_FEW and result.low > 0  # the interval is reported, the ranking withheld
    assert paired_comparison(np.append(a, 0.9), np.append(a - [0.05, 0.04, 0.06, 0.05], 0.85), 0.1).verdict == "A ahead"
    constant = paired_comparison(DIFFICULTY + 0.01, DIFFICULTY, 0.25)
    assert constant.verdict == NO_SPREAD and np.isnan(constant.p) and np.isnan(constant.low)


def test_the_ratio_comes_from_the_series_each_fold_used():
    from pipeline.stages.cv_compare import held_out_ratio

    capped = [
        {"trained_on": 200, "chosen_on": 150, "scored_on": 700},
        {"trained_on": 200, "chosen_on": 140, "scored_on": 720},
    ]
    assert held_out_ratio(capped, 5) == pytest.approx((700 / 200 + 720 / 200) / 2)  # not 1/4: the training was capped
    assert held_out_ratio([None, None], 5) == pytest.approx(1 / 4)  # fold runs from before the counts: k-fold's ratio
    a = DIFFICULTY
    b = DIFFICULTY - 0.004 + np.random.default_rng(2).normal(0, 0.01, len(DIFFICULTY))
    narrow, wide = paired_comparison(a, b, 1 / 4), paired_comparison(a, b, held_out_ratio(capped, 5))
    assert wide.high - wide.low > 2 * (narrow.high - narrow.low)


def test_lists_of_other_lengths_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_comparison(np.ones(3), np.ones(4), 0.5)


def test_repeats_reshuffle_whole_subjects_and_repeat_zero_keeps_the_plain_folds():
    ids = np.arange(60)
    subjects = np.repeat(np.arange(12), 5)
    plain = datasets.fold_assignment(ids, subjects, 3, 0)
    first, second = (datasets.fold_assignment(ids, subjects, 3, 0, repeat) for repeat in (1, 2))
    np.testing.assert_array_equal(datasets.fold_assignment(ids, subjects, 3, 0, 0), plain)
    for assignment in (first, second):
        assert set(assignment) == {0, 1, 2}
        assert all(len(set(assignment[subjects == subject])) == 1 for subject in range(12))
    assert not np.array_equal(first, plain) and not np.array_equal(first, second)


def test_repeats_of_blocks_move_the_boundaries_and_purge_around_a_wrapped_block():
    # Series i holds windows i..i+4; ids shuffled, so only the natural id order says who neighbours whom.
    ids = np.array([f"s{k}" for k in range(40)])[np.random.default_rng(2).permutation(40)]
    windows = {identifier: set(range(int(identifier[1:]), int(identifier[1:]) + 5)) for identifier in ids}
    cuts = [datasets.fold_assignment(ids, None, 4, 4, repeat) for repeat in range(4)]
    assert all(not np.array_equal(cuts[i], cuts[j]) for i in range(4) for j in range(i))  # four different cuts
    number = np.array([int(identifier[1:]) for identifier in ids])
    for assignment in cuts[1:]:
        assert np.bincount(assignment).tolist() == [10] * 4  # every series held out once per repeat
        wrapped = [fold for fold in range(4) if {0, 39} <= set(number[assignment == fold])]
        assert len(wrapped) == 1  # one block runs from the last ids round to the first
        for fold in range(4):
            training = datasets.training_mask(ids, None, assignment, fold, 4)
            inside = set().union(*(windows[i] for i in ids[assignment == fold]))
            assert not inside & set().union(*(windows[i] for i in ids[training])), f"fold {fold} shares windows"
            # and only those that share windows are purged: the gap equals the windows' overlap here
            sharing = np.array([bool(windows[i] & inside) for i in ids])
            np.testing.assert_array_equal(training, (assignment != fold) & ~sharing)


def test_fold_run_ids_of_the_first_repeat_stay_as_they_were():
    config = load_config(None, ["cv.folds=3"])
    repeated = load_config(None, ["cv.folds=3", "cv.repeats=4"])
    assert registry.run_id_for(datasets.fold_config(config, 1)) == registry.run_id_for(
        datasets.fold_config(repeated, 1)
    )
    assert registry.run_id_for(datasets.fold_config(repeated, 1, 2)) != registry.run_id_for(
        datasets.fold_config(repeated, 1)
    )
    assert "_cv3x4_" in registry.cv_id_for(repeated) and "_cv3_" in registry.cv_id_for(config)
    with pytest.raises(ConfigError, match="cv.repeat"):
        load_config(None, ["cv.repeats=2", "cv.repeat=2"])


def recorded_fold_scores(root: Path, cv_id: str) -> list[float]:
    """The selection score each fold run of a finished CV recorded."""
    folds = json.loads((root / "runs" / cv_id / "run.json").read_text())["folds"]
    return [json.loads((root / "runs" / run / "metrics.json").read_text())["selection"]["score"] for run in folds]


@pytest.mark.slow
def test_make_cv_compare_pairs_two_repeated_cross_validations_fold_by_fold(
    tracked_cvs: TrackedCVs, shared_data_root: Path
):
    """Two `make cv FOLDS=2 REPEATS=2` of the session (tests/conftest.py), copied into this test's root."""
    root = shared_data_root
    shutil.copytree(tracked_cvs.root / "runs", root / "runs", ignore=shutil.ignore_patterns("mlflow*"))
    a, b = tracked_cvs.ids
    assert "_bilstm-stats_" in b
    compared = run_make("cv-compare", f"A=cv:{a}", f"B={b}", f"SET=paths.root={root}")
    assert compared.returncode == 0, compared.stderr[-3000:]
    record = json.loads((root / "reports" / "cv_compare" / f"{a}__{b}" / "comparison.json").read_text())

    scores = {name: recorded_fold_scores(root, name) for name in (a, b)}
    np.testing.assert_allclose(record["differences"], np.subtract(scores[a], scores[b]))
    assert len(record["differences"]) == 4 and record["low"] <= record["mean"] <= record["high"]
    assert record["verdict"] == "too few pairs to rank" and "**too few pairs to rank**" in compared.stdout
    # every fold run trained, chose and was scored on three disjoint sets of whole subjects
    for cv_id in (a, b):
        for run in json.loads((root / "runs" / cv_id / "run.json").read_text())["folds"]:
            split = json.loads((root / "runs" / run / "split.json").read_text())
            sides = [set(split[side]) for side in ("trained_on", "chosen_on", "scored_on")]
            subjects = [set(split["subjects"][side]) for side in ("trained_on", "chosen_on", "scored_on")]
            for one, other in ((0, 1), (0, 2), (1, 2)):
                assert sides[one] and not sides[one] & sides[other], run
                assert not subjects[one] & subjects[other], run
            selection = json.loads((root / "runs" / run / "metrics.json").read_text())["selection"]
            assert selection["definition"]["protocol"] == datasets.PROTOCOL_NESTED
            assert selection["series"] == {"trained_on": 200, "chosen_on": len(sides[1]), "scored_on": len(sides[2])}


@pytest.mark.slow
def test_the_two_cvs_as_one_cross_validated_ensemble_and_a_peer_on_their_folds(
    tracked_cvs: TrackedCVs, shared_data_root: Path
):
    """The session's two CVs (tests/conftest.py) as a cross-validated ensemble paired with one of them,
    and QUANT cross-validated on their folds."""
    root = shared_data_root
    shutil.copytree(tracked_cvs.root / "runs", root / "runs", ignore=shutil.ignore_patterns("mlflow*"))
    base = [f"paths.root={root}", *CV_BASE]
    a, b = tracked_cvs.ids
    folds = json.loads((root / "runs" / b / "run.json").read_text())["folds"]

    scores = {name: recorded_fold_scores(root, name) for name in (a, b)}
    # B's fold models (with the statistics branch) predict as an ensemble.
    predicted = run_make("predict", f"RUN=cv:{b}", f"SET=paths.root={root}")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (lineage,) = (root / "submissions").glob("classroom_ensemble4_*.json")
    assert json.loads(lineage.read_text())["runs"] == folds
    # A and B as one cross-validated ensemble: fold run i averages fold run i of each, scored on fold i.
    made = run_make("ensemble", f"RUN=cv:{a} {b}", f"SET=paths.root={root}")
    assert made.returncode == 0, made.stderr[-3000:]
    (ensemble_cv,) = [path.name for path in (root / "runs").glob("classroom_cv2x2_ensemble2_*")]
    lineage = json.loads((root / "runs" / ensemble_cv / "run.json").read_text())
    assert lineage["kind"] == "cv" and lineage["members"] == [a, b] and len(lineage["folds"]) == 4
    a_folds = json.loads((root / "runs" / a / "run.json").read_text())["folds"]
    for fold_ensemble, members in zip(lineage["folds"], zip(a_folds, folds)):
        assert json.loads((root / "runs" / fold_ensemble / "run.json").read_text())["members"] == list(members)
    # Its first fold's score, recomputed apart: the members' mean probability on that fold's noisy draws.
    from pipeline import models

    fold_metrics = json.loads((root / "runs" / lineage["folds"][0] / "metrics.json").read_text())
    definition = fold_metrics["selection"]["definition"]
    assert (
        definition == json.loads((root / "runs" / a_folds[0] / "metrics.json").read_text())["selection"]["definition"]
    )
    data = datasets.load_training_data(registry.run_config(load_config(None, base), root / "runs" / a_folds[0]))
    members = [models.load_model(str(root / "runs" / run / "model.keras")) for run in (a_folds[0], folds[0])]

    class MeanOfMembers:
        def predict(self, series, **options):
            return np.mean([member.predict(series, **options) for member in members], axis=0)

    assert fold_metrics["selection"]["score"] == pytest.approx(selection_accuracy(MeanOfMembers(), data, definition))
    paired = run_make("cv-compare", f"A={ensemble_cv}", f"B={a}", f"SET=paths.root={root}")
    assert paired.returncode == 0, paired.stderr[-3000:]
    record = json.loads((root / "reports" / "cv_compare" / f"{ensemble_cv}__{a}" / "comparison.json").read_text())
    np.testing.assert_allclose(record["differences"], np.subtract(recorded_fold_scores(root, ensemble_cv), scores[a]))
    # A peer cross-validated on B's folds: fitted on each fold run's training series, scored on its
    # selection; QUANT (aeon, on PyTorch) with noised copies, its fit time and peak memory printed per fold.
    peer = run_make("cv-compare", "A=peer:quant+copies", f"B={b}", f"SET=paths.root={root}")
    assert peer.returncode == 0, peer.stderr[-3000:]
    assert peer.stdout.count("peak memory") == 4, peer.stdout
    record = json.loads((root / "reports" / "cv_compare" / f"peer-quant+copies__{b}" / "comparison.json").read_text())
    assert len(record["a_scores"]) == 4 and record["b_scores"] == scores[b]
    assert record["a_scores"] != record["b_scores"]
    # paired again: each fold's score read back, not refitted, except where what it was kept for
    # no longer matches (here a kept key altered: that fold is fitted again)
    kept = kept_peer_scores(root, "quant+copies")[folds[0]]
    altered = json.loads(kept.read_text())
    kept.write_text(json.dumps({**altered, "key": "another fit"}))
    again = run_make("cv-compare", "A=peer:quant+copies", f"B={b}", f"SET=paths.root={root}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("peak memory") == 1 and again.stdout.count("its score kept in") == 3, again.stdout
    assert json.loads(kept.read_text())["key"] == altered["key"]
    repeated = json.loads((root / "reports" / "cv_compare" / f"peer-quant+copies__{b}" / "comparison.json").read_text())
    assert repeated["a_scores"] == record["a_scores"]
    # LEVEL=: the same folds paired on their validation noise draws (the tiny CVs validate at 0.5 only;
    # the kept scores had no validation, so each fold is fitted again)
    at_one = run_make("cv-compare", "A=peer:quant+copies", f"B={b}", "LEVEL=0.5", f"SET=paths.root={root}")
    assert at_one.returncode == 0, at_one.stderr[-3000:]
    assert at_one.stdout.count("peak memory") == 4, at_one.stdout
    report = root / "reports" / "cv_compare" / f"peer-quant+copies__{b}__noise0.5" / "comparison.json"
    paired = json.loads(report.read_text())
    assert paired["level"] == 0.5 and paired["b_scores"] == [
        json.loads((root / "runs" / run / "metrics.json").read_text())["validation"]["0.5"]["mean"] for run in folds
    ]
    kept_files = kept_peer_scores(root, "quant+copies")
    assert paired["a_scores"] == [json.loads(kept_files[run].read_text())["validation"]["0.5"]["mean"] for run in folds]
    # A's fold runs hold another model on the same split: the peer's kept fits serve them, none refitted
    shared = run_make("cv-compare", "A=peer:quant+copies", f"B={a}", f"SET=paths.root={root}")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert "peak memory" not in shared.stdout and shared.stdout.count("its score kept in") == 4, shared.stdout
    on_a = json.loads((root / "reports" / "cv_compare" / f"peer-quant+copies__{a}" / "comparison.json").read_text())
    assert on_a["a_scores"] == record["a_scores"] and on_a["b_scores"] == scores[a]


def kept_peer_scores(root: Path, peer: str) -> dict[str, Path]:
    """The files keeping a peer's fold scores, by the fold run each was fitted for."""
    files = (root / "reports" / "cv_compare" / "peer_folds" / peer).glob("*.json")
    return {json.loads(path.read_text())["run"]: path for path in files}


def test_a_peer_meets_each_fold_runs_own_series_and_noise_draws(
    tracked_cvs: TrackedCVs, shared_data_root: Path, monkeypatch: pytest.MonkeyPatch
):
    """Stand each fold's own recurrent model in for the peer: scored by the peer's path it must get
    exactly the fold run's recorded score (the same scored series, noise draws, definition), after a
    fit on exactly the series that run trained and chose on (its split.json)."""
    from pipeline import models
    from pipeline.models import baselines
    from pipeline.stages import cv_compare

    root = shared_data_root
    shutil.copytree(tracked_cvs.root / "runs", root / "runs", ignore=shutil.ignore_patterns("mlflow*"))
    cv_id = tracked_cvs.ids[1]
    folds = json.loads((root / "runs" / cv_id / "run.json").read_text())["folds"]
    fitted_on = []

    class FoldModel:
        """A peer's interface around the next fold's trained model."""

        def __init__(self, run: str):
            self.model, self.classes_ = models.load_model(str(root / "runs" / run / "model.keras")), np.arange(6)

        def fit(self, series, labels):
            fitted_on.append(len(series))
            return self

        def predict_proba(self, series):
            return self.model.predict(series, verbose=0)

    stand_ins = iter(folds)
    monkeypatch.setattr(baselines, "make_peer", lambda name, seed=0: FoldModel(next(stand_ins)))
    scored = cv_compare.peer_fold_scores(load_config(None, [f"paths.root={root}"]), "logistic_regression", cv_id)
    recorded = [json.loads((root / "runs" / run / "metrics.json").read_text())["selection"] for run in folds]
    assert scored.scores == [selection["score"] for selection in recorded]
    assert scored.definitions == [selection["definition"] for selection in recorded]
    splits = [json.loads((root / "runs" / run / "split.json").read_text()) for run in folds]
    assert fitted_on == [len(split["trained_on"]) + len(split["chosen_on"]) for split in splits]


def selection_accuracy(model, data, definition: dict) -> float:
    """A model's selection score recomputed apart: its mean accuracy over the definition's noise draws."""
    from pipeline.data import scoring

    draws = scoring.noise_draws(
        {"model": model},
        data.scored_series,
        data.scored_labels,
        (definition["noise_level"],),
        definition["draws"],
        definition["noise_profile"],
        data.train_std,
        definition["seed"],
    )
    return float(draws["accuracy"].mean())


def registry_cv(
    root: Path,
    name: str,
    scores: list[float],
    validation_ids: list[str],
    folds: int = 2,
    protocol: str | None = None,
    at_one: list[float] | None = None,
    seed: int = 42,
) -> None:
    """A finished CV entry and its fold runs, as make cv writes them (the files cv-compare reads);
    `protocol` None: a CV from before protocols were recorded; `at_one`: each fold run's validation
    accuracy at noise 1 (its noise drawn with train.seed `seed`)."""
    definition = {"noise_level": 0.5, "select_on": "noisy", "draws": 3, **({"protocol": protocol} if protocol else {})}
    fold_ids = [f"{name}_fold{index}" for index in range(len(scores))]
    for index, (fold_id, score, ids) in enumerate(zip(fold_ids, scores, validation_ids)):
        (root / "runs" / fold_id).mkdir(parents=True)
        validation = {"0.5": {"mean": score}, **({"1": {"mean": at_one[index]}} if at_one else {})}
        (root / "runs" / fold_id / "metrics.json").write_text(
            json.dumps(
                {
                    "selection": {"score": score, "definition": {**definition, "validation_ids": ids}},
                    "validation": validation,
                }
            )
        )
        (root / "runs" / fold_id / "config.json").write_text(
            json.dumps({"train": {"seed": seed, "noise_seeds": 3}, "data": {"noise_profile": "gaussian"}})
        )
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"kind": "cv", "folds": fold_ids}))
    (folder / "config.json").write_text(json.dumps({"cv": {"folds": folds}}))
    (folder / "metrics.json").write_text(json.dumps({"selection": {"definition": definition}}))


def test_peers_need_a_cross_validation_beside_them_and_a_known_name(tmp_path: Path):
    from pipeline.stages import cv_compare

    config = load_config(None, [f"paths.root={tmp_path}"])
    registry_cv(tmp_path, "a_cv2", [0.9, 0.8], ["x", "y"])
    with pytest.raises(DataError, match="unknown peer"):
        cv_compare.compare(config, "peer:svm", "a_cv2")
    with pytest.raises(DataError, match="unknown peer"):
        cv_compare.compare(config, "a_cv2", "peer:minirocket+twice")
    with pytest.raises(DataError, match="two peers"):
        cv_compare.compare(config, "peer:minirocket", "peer:logistic_regression")


def test_cross_validations_cut_into_other_folds_are_refused_and_like_ones_compared(tmp_path: Path):
    from pipeline.stages import cv_compare

    config = load_config(None, [f"paths.root={tmp_path}"])
    registry_cv(tmp_path, "a_cv2x2", [0.90, 0.95, 0.91, 0.94], ["f0", "f1", "g0", "g1"])
    registry_cv(tmp_path, "b_cv2x2", [0.89, 0.94, 0.90, 0.93], ["f0", "f1", "g0", "g1"])
    registry_cv(tmp_path, "c_cv2", [0.89, 0.94], ["f0", "f1"])
    registry_cv(tmp_path, "d_cv2x2", [0.89, 0.94, 0.90, 0.93], ["f0", "f1", "h0", "h1"])  # other subjects in repeat 2
    result = cv_compare.compare(config, "cv:a_cv2x2", "b_cv2x2")
    np.testing.assert_allclose(result.differences, [0.01] * 4)
    assert result.verdict == cv_compare.NO_SPREAD and np.isnan(
        result.p
    )  # the same point on every fold: nothing to test
    saved = json.loads((tmp_path / "reports" / "cv_compare" / "a_cv2x2__b_cv2x2" / "comparison.json").read_text())
    assert saved["verdict"] == cv_compare.NO_SPREAD and saved["differences"] == pytest.approx([0.01] * 4)
    assert saved["p"] is None and saved["low"] is None
    for other in ("c_cv2", "d_cv2x2"):
        with pytest.raises(DataError, match="not cut into the same folds"):
            cv_compare.compare(config, "a_cv2x2", other)
    with pytest.raises(DataError, match="no such cross-validation"):
        cv_compare.compare(config, "a_cv2x2", "nothing")
    from pipeline.stages import ensemble

    with pytest.raises(DataError, match="not cut into the same folds"):
        ensemble.make_ensemble(config, ["cv:a_cv2x2", "d_cv2x2"])  # several CVs: a cross-validated ensemble
    with pytest.raises(DataError, match="appears twice"):
        ensemble.make_ensemble(config, ["cv:a_cv2x2", "a_cv2x2"])


def test_level_pairs_the_held_out_folds_at_another_noise_and_refuses_what_is_not_paired_there(tmp_path: Path):
    from pipeline.stages import cv_compare

    config = load_config(None, [f"paths.root={tmp_path}"])
    ids = ["f0", "f1", "g0", "g1", "h0"]
    registry_cv(tmp_path, "a_cv2", [0.90, 0.95, 0.91, 0.94, 0.92], ids, at_one=[0.80, 0.90, 0.82, 0.88, 0.85])
    registry_cv(tmp_path, "b_cv2", [0.91, 0.95, 0.92, 0.94, 0.93], ids, at_one=[0.70, 0.81, 0.71, 0.80, 0.74])
    registry_cv(tmp_path, "c_cv2", [0.91, 0.95, 0.92, 0.94, 0.93], ids, at_one=[0.70, 0.81, 0.71, 0.80, 0.74], seed=7)
    at_selection = cv_compare.compare(config, "a_cv2", "b_cv2")
    at_one = cv_compare.compare(config, "a_cv2", "b_cv2", level=1.0)
    np.testing.assert_allclose(at_selection.differences, [-0.01, 0, -0.01, 0, -0.01])
    np.testing.assert_allclose(at_one.differences, [0.10, 0.09, 0.11, 0.08, 0.11])
    assert at_one.verdict == "A ahead" and at_selection.verdict == "not separated"
    report = (tmp_path / "reports" / "cv_compare" / "a_cv2__b_cv2__noise1" / "comparison.md").read_text()
    assert "held-out series at noise 1" in report
    assert (
        json.loads((tmp_path / "reports" / "cv_compare" / "a_cv2__b_cv2" / "comparison.json").read_text())["level"]
        is None
    )
    with pytest.raises(DataError, match="no validation score at noise 0.75"):
        cv_compare.compare(config, "a_cv2", "b_cv2", level=0.75)
    with pytest.raises(DataError, match="drew their validation noise differently"):
        cv_compare.compare(config, "a_cv2", "c_cv2", level=1.0)
    assert cv_compare.compare(config, "a_cv2", "c_cv2").verdict == "not separated"  # the selection's draws are shared


def test_a_cv_of_the_old_protocol_is_refused_beside_a_nested_one_and_old_ones_still_pair(tmp_path: Path):
    from pipeline.stages import cv_compare, ensemble

    config = load_config(None, [f"paths.root={tmp_path}"])
    ids = ["f0", "f1", "g0", "g1", "h0"]
    registry_cv(tmp_path, "old_cv2", [0.90, 0.95, 0.91, 0.94, 0.92], ids)
    registry_cv(tmp_path, "older_cv2", [0.89, 0.95, 0.90, 0.93, 0.92], ids, protocol=datasets.PROTOCOL_OPTIMISTIC)
    registry_cv(tmp_path, "new_cv2", [0.89, 0.94, 0.90, 0.93, 0.90], ids, protocol=datasets.PROTOCOL_NESTED)
    for a, b in (("old_cv2", "new_cv2"), ("new_cv2", "older_cv2")):
        with pytest.raises(
            DataError, match=r"different protocols \((old|older)_cv2: .*re-run (old|older)_cv2 with `make cv`"
        ):
            cv_compare.compare(config, a, b)
    with pytest.raises(DataError, match="different protocols"):
        ensemble.make_ensemble(config, ["cv:old_cv2", "new_cv2"])
    # a definition without a protocol is the old one: two old CVs still pair (to read the old numbers again)
    result = cv_compare.compare(config, "old_cv2", "older_cv2")
    assert len(result.differences) == 5
    report = (tmp_path / "reports" / "cv_compare" / "old_cv2__older_cv2" / "comparison.md").read_text()
    assert "optimistic" in report


def test_repeats_a_competition_cannot_cut_are_refused_before_any_fold_trains(monkeypatch, tmp_path: Path):
    from types import SimpleNamespace

    from pipeline.runs import training
    from pipeline.stages import cv

    # 12 series in 4 blocks of 3: the boundaries can move by 1 or 2 series, so at most 3 different cuts.
    blocks = SimpleNamespace(ids=np.array([f"s{index}" for index in range(12)]), subjects=None)  # no subjects
    monkeypatch.setattr(datasets, "open_competition", lambda config: SimpleNamespace(train=blocks, validation=None))
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: pytest.fail("a fold trained before the refusal"))
    config = load_config(None, [f"paths.root={tmp_path}", "cv.folds=4", "cv.gap=1", "cv.repeats=6"])
    with pytest.raises(DataError, match="into the same folds as an earlier one"):
        cv.cross_validate(config)
    datasets.check_folds(load_config(None, [f"paths.root={tmp_path}", "cv.folds=4", "cv.gap=1", "cv.repeats=2"]))
