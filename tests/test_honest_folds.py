"""Honest folds: a CV fold run chooses on an inner split of its training part, and its held-out
fold, scored once, chose nothing (make cv, split.json, the nested protocol against the old one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.data import datasets
from pipeline.data.competition import Split, write_competition
from pipeline.errors import DataError
from pipeline.runs import registry

SUBJECTS, PER_SUBJECT = 12, 8


def noise_competition(root: Path, name: str = "noise") -> None:
    """Pure noise with random labels: nothing to learn, so any fold score above chance is optimism."""
    rng = np.random.default_rng(0)
    count = SUBJECTS * PER_SUBJECT
    train = Split(
        rng.normal(size=(count, 5, 3)).astype(np.float32),
        np.array([f"s{index}" for index in range(count)]),
        rng.integers(1, 3, count),
        np.repeat(np.arange(1, SUBJECTS + 1), PER_SUBJECT),
    )
    test = Split(rng.normal(size=(8, 5, 3)).astype(np.float32), np.array([f"t{index}" for index in range(8)]))
    write_competition(root / "data" / "processed" / name, "npz", ("x", "y", "z"), {"train": train, "test": test}, 1)


def noise_settings(root: Path, *more: str) -> list[str]:
    return [
        f"paths.root={root}",
        "data.competition=noise",
        "tracking.uri=off",
        "cv.folds=4",
        "cv.repeats=2",
        "model.units=32",
        "model.layers=1",
        # a large step on inputs drowned in noise: the weights never settle, so every epoch reads
        # the held-out series afresh (a curve that settles gives few readings to pick the best of)
        "regularization.gaussian_noise=1",
        "train.learning_rate=0.1",
        "train.reduce_lr_patience=100",
        "train.epochs=12",
        "train.patience=100",
        "train.select_on=clean",  # the fold score is then exactly the chosen checkpoint's accuracy
        "train.noise_levels=[0]",
        "train.noise_seeds=1",
        "train.verbose=0",
        *more,
    ]


def test_inner_split_keeps_subjects_apart_and_only_the_held_out_fold_is_scored(tmp_path: Path):
    noise_competition(tmp_path)
    config = load_config(None, noise_settings(tmp_path))
    datasets.check_folds(config)
    for repeat in range(2):
        for fold in range(4):
            data = datasets.load_training_data(datasets.fold_config(config, fold, repeat))
            record = datasets.split_record(data)
            sides = [set(record[side]) for side in ("trained_on", "chosen_on", "scored_on")]
            assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
            subjects = [set(record["subjects"][side]) for side in ("trained_on", "chosen_on", "scored_on")]
            assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
            assert len(set().union(*sides)) == SUBJECTS * PER_SUBJECT  # whole subjects: nothing purged
            assert len(subjects[2]) == 3 and len(subjects[1]) == 2  # 12/4 scored; 9 left, one of 5 inner folds
    old = datasets.load_training_data(
        datasets.fold_config(load_config(None, noise_settings(tmp_path, "cv.inner_folds=0")), 1)
    )
    assert list(old.validation_ids) == list(old.scored_ids) and old.protocol == datasets.PROTOCOL_OPTIMISTIC


def test_inner_blocks_without_subjects_are_purged_like_the_outer_ones():
    ids = np.array([f"s{index}" for index in range(60)])
    number = np.arange(60)
    outer = datasets.fold_assignment(ids, None, 3, 2)
    part = datasets.training_mask(ids, None, outer, 1, 2)
    config = load_config(None, ["cv.folds=3", "cv.gap=2", "cv.fold=1", "cv.inner_folds=4"])
    trains, chooses = datasets.inner_split(ids, None, part, config)
    assert not (trains & chooses).any() and not ((trains | chooses) & (outer == 1)).any()
    chosen = number[chooses]
    # the chosen block is contiguous in id order among the part, and two series either side of it are purged
    for edge in (chosen.min(), chosen.max()):
        near = np.abs(number - edge) <= 2
        assert not (trains & near).any()
    assert trains.sum() >= part.sum() - chooses.sum() - 4


def test_inner_folds_of_one_and_a_part_too_small_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="cv.inner_folds"):
        load_config(None, ["cv.inner_folds=1"])
    noise_competition(tmp_path)
    config = load_config(None, noise_settings(tmp_path, "cv.inner_folds=10"))  # 9 subjects in a training part
    with pytest.raises(DataError, match="too few for cv.inner_folds=10 inner folds"):
        datasets.check_folds(config)


def test_nested_and_old_protocol_fold_runs_and_cvs_have_ids_of_their_own():
    nested, old = load_config(None, ["cv.folds=3"]), load_config(None, ["cv.folds=3", "cv.inner_folds=0"])
    assert registry.run_id_for(datasets.fold_config(nested, 1)) != registry.run_id_for(datasets.fold_config(old, 1))
    assert registry.cv_id_for(nested) != registry.cv_id_for(old)


@pytest.mark.slow
def test_pure_noise_scores_chance_when_nested_and_above_chance_when_scored_where_it_chose(tmp_path: Path):
    """The optimism the nested protocol removes: a validation curve of pure noise, read 12 times a fold."""
    from pipeline.stages import cv

    noise_competition(tmp_path)
    means = {}
    for inner in (5, 0):
        config = load_config(None, noise_settings(tmp_path, f"cv.inner_folds={inner}"))
        folder = cv.cross_validate(config)
        fold_runs = json.loads((folder / "run.json").read_text())["folds"]
        scores = [json.loads((tmp_path / "runs" / run / "metrics.json").read_text())["selection"] for run in fold_runs]
        scored = sum(selection["series"]["scored_on"] for selection in scores) / 2  # each series scored once a repeat
        assert scored == SUBJECTS * PER_SUBJECT
        means[inner] = float(np.mean([selection["score"] for selection in scores]))
        for run in fold_runs:
            split = json.loads((tmp_path / "runs" / run / "split.json").read_text())
            assert (split["chosen_on"] == split["scored_on"]) == (inner == 0)
    # 8 fold scores of 24 series at chance 0.5: their mean has a binomial spread of about 0.036.
    spread = np.sqrt(0.25 / (2 * SUBJECTS * PER_SUBJECT))
    assert abs(means[5] - 0.5) < 3 * spread, means
    assert means[0] > 0.5 + 3 * spread, means
