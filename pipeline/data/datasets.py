"""A competition's arrays as the later stages use them, checked against the config that asks for them.

The participant's side: train and validation series (or a held-out part of train), a noisy copy of
validation at the test noise, and the noisy test file. The organizer's side, for a competition
emulated by `make prepare`: the clean test series and the answer key in data/private/<competition>/,
used only for reports, never to train or to choose.

A prepared competition is stamped with the data settings that built it (its data card's
`inputs.data_settings`). A stage whose config asks for other settings (data.classes, the noise
profile or levels, the subjects, the windowing) is refused with the command that fixes it, so a run
can never claim settings its data were not made with.

Two noise units, on purpose: a participant only has the noisy training series, so training-side
noise (noisy validation, noised copies) is counted in `TrainingData.train_std`, the std of the
training series as given; the organizer drew the test noise in the clean-train std of the data card,
`OrganizerSide.noise_unit`, which the test-side scores use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.data.competition import Competition, load_competition
from pipeline.data.signals import add_noise, channel_std
from pipeline.errors import DataError
from pipeline.files import short_hash, write_json_atomic

DATACARD = "datacard.json"
SOLUTION = "solution.csv"
CLEAN_TEST = "test_clean.npz"
NOISY_VALIDATION_SEED = 7  # + train.seed: the per-epoch noisy validation draw
SELECTION_SEED = 7919  # + data.seed: the draws every run's selection score is computed on (one set for all runs)


# ---- the prepared folder and its settings -----------------------------------------------------------


def competition_folder(config: Config) -> Path:
    return config.processed_dir / config.data.competition


def read_datacard(config: Config) -> dict[str, Any]:
    path = competition_folder(config) / DATACARD
    return json.loads(path.read_text()) if path.is_file() else {}


def data_settings(config: Config) -> dict[str, Any]:
    """The data settings a prepared competition is built from (as JSON would store them)."""
    settings = config.to_dict()["data"]
    for key in ("competition", "name", "source"):  # which folder, not what is in it
        settings.pop(key)
    return json.loads(json.dumps(settings))


def stamp_as_is(folder: Path, name: str, record: dict[str, Any]) -> dict[str, object]:
    """Write the datacard of a competition used as it is (copied by `make data`, or written from a
    user's arrays by the estimator): its summary and `record`, where it came from. Its summary back."""
    summary = load_competition(folder).summary()
    write_json_atomic(folder / DATACARD, {"competition": name, **summary, "inputs": record})
    return summary


def settings_mismatch(config: Config, card: dict[str, Any]) -> list[str]:
    """'key: prepared X, config Y' for every data setting the prepared folder was not built with."""
    inputs = card.get("inputs", {})
    stamped = inputs.get("data_settings")
    if stamped is None:
        if (
            "source_sha256" in inputs
        ):  # emulated by a version of `make prepare` that stamped no settings: what it holds is unknown
            return ["prepared by an older version of make prepare, with no data settings stamped"]
        return []  # a copied competition: built elsewhere, none of our data settings made it
    wanted = data_settings(config)
    return [
        f"data.{key}: prepared {json.dumps(stamped.get(key))}, config {json.dumps(value)}"
        for key, value in wanted.items()
        if stamped.get(key) != value
    ]


def open_competition(config: Config) -> Competition:
    """The configured competition, loaded and validated, after checking it was prepared with these data settings."""
    folder = competition_folder(config)
    name = config.data.competition
    if not folder.is_dir():
        if (config.raw_dir / name).is_dir():
            raise DataError(f"{folder}: not prepared yet; run `make prepare COMPETITION={name}`")
        raise DataError(
            f"{folder}: no such competition; run `make data` (SOURCE=... NAME={name} for your own) and then `make prepare COMPETITION={name}`"
        )
    mismatch = settings_mismatch(config, read_datacard(config))
    if mismatch:
        raise DataError(
            f"{folder} was prepared with other data settings ({'; '.join(mismatch)}); "
            f"run `make prepare COMPETITION={name}` with the same SET= as this command to rebuild it"
        )
    return load_competition(folder)


def check_run_data(config: Config, run_id: str, data_inputs: Any) -> None:
    """Refuse a run trained on other prepared data (its lineage's `data_inputs`) than the folder holds
    now (prepared again since)."""
    if data_inputs != read_datacard(config).get("inputs"):
        raise DataError(
            f"run {run_id} was trained on {competition_folder(config)} as prepared from other inputs or settings than it holds now; "
            f"train it again (`make train FORCE=1` with its settings) or prepare the data it was trained on"
        )


# ---- the participant's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    competition: Competition
    classes: tuple[int, ...]  # activity numbers; index i is the model's output i
    train_series: np.ndarray
    train_labels: np.ndarray  # class indices
    validation_series: np.ndarray
    validation_labels: np.ndarray
    validation_ids: np.ndarray
    validation: str  # where the validation series come from (part of the selection definition)
    noisy_validation_series: np.ndarray  # the validation series under the test noise profile (one draw)
    train_std: (
        np.ndarray
    )  # std per channel of the training series as the participant has them: the unit of training-side noise
    train_ids: np.ndarray | None = None  # the training series' ids, in train_series order
    # What the run's scores are computed on: a CV fold run's held-out fold, which chose nothing
    # (the validation series above are then an inner fold of its training part); else the validation series.
    scored_series: np.ndarray | None = None
    scored_labels: np.ndarray | None = None
    scored_ids: np.ndarray | None = None
    protocol: str | None = None  # a fold run's selection protocol (PROTOCOL_NESTED or PROTOCOL_OPTIMISTIC)
    subjects: dict[str, np.ndarray] | None = None  # trained_on / chosen_on / scored_on -> subject per series


PROTOCOL_NESTED = "nested: chosen on an inner fold of the training part, the held-out fold scored once"
PROTOCOL_OPTIMISTIC = "optimistic: chosen and scored on the held-out fold (the protocol before 2026-12-05)"


def fold_protocol(definition: dict[str, Any]) -> str:
    """The protocol a fold's (or a CV's) selection definition was made under; a definition from
    before protocols were recorded chose on the fold it scored."""
    return definition.get("protocol", PROTOCOL_OPTIMISTIC)


def protocol_mismatch(a_id: str, b_id: str, a_definition: dict[str, Any], b_definition: dict[str, Any]) -> str:
    """The one-line refusal of two CVs (or ensembles, studies) made under different selection protocols."""
    old = a_id if fold_protocol(a_definition) == PROTOCOL_OPTIMISTIC else b_id
    return (
        f"{a_id} and {b_id} were cross-validated under different protocols ({old}: each fold chose its epoch on the "
        f"series it is scored on, optimistic); re-run {old} with `make cv` and its EXP= and SET= (nested selection "
        "is the default now) before comparing them"
    )


def noisy_scored_series(config: Config, data: TrainingData) -> np.ndarray:
    """The scored series under one draw of the test noise, as the participant would see them: the
    noisy validation copy itself unless a nested fold run scores other series than it chose on."""
    if data.protocol != PROTOCOL_NESTED:
        return data.noisy_validation_series
    return add_noise(
        data.scored_series,
        config.data.noise_profile,
        config.data.test_noise,
        data.train_std,
        config.train.seed + NOISY_VALIDATION_SEED,
    )


def split_record(data: TrainingData) -> dict[str, Any]:
    """split.json of a fold run: the series it trained on, chose on and was scored on (and their subjects)."""
    record: dict[str, Any] = {
        "protocol": data.protocol,
        "trained_on": [str(identifier) for identifier in data.train_ids],
        "chosen_on": [str(identifier) for identifier in data.validation_ids],
        "scored_on": [str(identifier) for identifier in data.scored_ids],
    }
    if data.subjects is not None:
        record["subjects"] = {side: sorted({int(s) for s in subjects}) for side, subjects in data.subjects.items()}
    return record


def to_indices(labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    lookup = {activity: index for index, activity in enumerate(classes)}
    return np.array([lookup[int(label)] for label in labels], dtype=np.int64)


def fold_assignment(ids: np.ndarray, subjects: np.ndarray | None, folds: int, gap: int, repeat: int = 0) -> np.ndarray:
    """The CV fold of every series. Whole subjects per fold where subjects are known (GroupKFold; for
    `repeat` > 0 the subjects are shuffled into other folds, seeded by the repeat); otherwise
    contiguous blocks in id order, where neighbouring series share windows: `training_mask` then
    leaves the `gap` series on either side of the held-out block out of that fold's training. For
    `repeat` > 0 the block boundaries move by part of a block (the order read as a circle, so one
    block wraps from the last ids to the first: two contiguous pieces, each purged alike)."""
    if subjects is not None:
        if len(np.unique(subjects)) < folds:
            raise DataError(
                f"{len(np.unique(subjects))} subjects cannot fill cv.folds={folds} subject-wise folds; lower cv.folds"
            )
        from sklearn.model_selection import GroupKFold

        splitter = (
            GroupKFold(n_splits=folds, shuffle=True, random_state=repeat) if repeat else GroupKFold(n_splits=folds)
        )
        assignment = np.full(len(ids), -1)
        for fold, (_train, held_out) in enumerate(splitter.split(ids, groups=subjects)):
            assignment[held_out] = fold
        return assignment
    if len(ids) < folds * (gap + 2):
        raise DataError(f"{len(ids)} series are too few for cv.folds={folds} blocks with a gap of cv.gap={gap}")
    block = len(ids) // folds
    # Repeat r moves the boundaries by 1 .. block - 1 series, spread by the golden ratio (any number of repeats).
    shift = 1 + int((block - 1) * ((repeat * 0.6180339887) % 1)) if repeat else 0
    assignment = np.full(len(ids), -1)
    for fold, members in enumerate(np.array_split(np.roll(id_order(ids), -shift), folds)):
        assignment[members] = fold
    return assignment


def id_order(ids: np.ndarray) -> np.ndarray:
    """Positions of the series in natural id order (s9 before s10)."""
    return np.array(sorted(range(len(ids)), key=lambda index: natural_key(str(ids[index]))), dtype=np.int64)


def training_mask(
    ids: np.ndarray, subjects: np.ndarray | None, assignment: np.ndarray, fold: int, gap: int
) -> np.ndarray:
    """The series that train while fold `fold` is held out: every other fold's, less (for blocks in id
    order, where no subjects are known) the `gap` series just before and just after each contiguous
    piece of the held-out block, which share windows with it (purged k-fold). Only the held-out
    block's neighbours are purged, so a fold trains on all but about `2 x gap` of the other series."""
    kept = assignment != fold
    if subjects is not None or gap == 0:
        return kept
    order = id_order(ids)
    positions = np.flatnonzero(assignment[order] == fold)  # in id order: one piece, or two where it wraps
    for piece in np.split(positions, np.flatnonzero(np.diff(positions) > 1) + 1):
        start, stop = int(piece[0]), int(piece[-1]) + 1
        kept[order[max(start - gap, 0) : start]] = False
        kept[order[stop : stop + gap]] = False
    return kept


def natural_key(text: str) -> tuple:
    """'s10' after 's9': ids compared by their numbers where they have them."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def load_training_data(config: Config) -> TrainingData:
    """Train and validation arrays of the configured competition, plus the noisy validation copy.

    Validation is the competition's validation split; with `cv.fold` set, fold `cv.fold` of the
    labeled series (train and validation together); a competition without a validation split
    holds out fold 0 of the same folds (whole subjects, or a block with a gap: never a random
    sample, whose neighbours would share windows with the training series)."""
    competition = open_competition(config)
    classes = competition.activities
    train = competition.train
    protocol, subject_sides = None, None
    if config.cv.fold >= 0 or competition.validation is None:
        labeled = [train] + (
            [competition.validation] if competition.validation is not None and config.cv.fold >= 0 else []
        )
        series = np.concatenate([split.series for split in labeled])
        labels = to_indices(np.concatenate([split.labels for split in labeled]), classes)
        ids, subjects = pooled_ids(labeled)
        fold = max(config.cv.fold, 0)
        assignment = fold_assignment(ids, subjects, config.cv.folds, config.cv.gap, config.cv.repeat)
        held_out, kept = assignment == fold, training_mask(ids, subjects, assignment, fold, config.cv.gap)
        chosen = held_out
        if config.cv.fold >= 0 and config.cv.inner_folds:  # nested: choose on an inner fold of the training part
            protocol = PROTOCOL_NESTED
            kept, chosen = inner_split(ids, subjects, kept, config)
        elif config.cv.fold >= 0:
            protocol = PROTOCOL_OPTIMISTIC
        train_series, train_labels, train_ids = series[kept], labels[kept], ids[kept]
        validation_series, validation_labels, validation_ids = series[chosen], labels[chosen], ids[chosen]
        scored = (series[held_out], labels[held_out], ids[held_out])
        if subjects is not None:
            subject_sides = {
                "trained_on": subjects[kept],
                "chosen_on": subjects[chosen],
                "scored_on": subjects[held_out],
            }
        unit = "subjects" if subjects is not None else f"blocks in id order, {config.cv.gap} neighbours purged"
        validation = f"fold {fold} of {config.cv.folds} ({unit})" + (
            " of train and validation" if config.cv.fold >= 0 else " of train"
        )
    else:
        train_series, train_labels, train_ids = train.series, to_indices(train.labels, classes), train.ids
        validation_series, validation_labels = (
            competition.validation.series,
            to_indices(competition.validation.labels, classes),
        )
        validation_ids, validation = competition.validation.ids, "the validation split"
        scored = (validation_series, validation_labels, validation_ids)
    if (
        config.cv.refit
    ):  # every labeled series trains; the validation series above are then in-sample, kept only for the epoch log
        labeled = [train] + ([competition.validation] if competition.validation is not None else [])
        train_series = np.concatenate([split.series for split in labeled])
        train_labels = to_indices(np.concatenate([split.labels for split in labeled]), classes)
        train_ids = np.concatenate([split.ids for split in labeled])
        validation = "none: a refit on every labeled series (the logged validation scores are in-sample)"
    std = channel_std(train_series)
    noisy = add_noise(
        validation_series,
        config.data.noise_profile,
        config.data.test_noise,
        std,
        config.train.seed + NOISY_VALIDATION_SEED,
    )
    if config.train.max_train_series and len(train_series) > config.train.max_train_series:
        keep = np.sort(
            np.random.default_rng(config.train.seed).choice(
                len(train_series), config.train.max_train_series, replace=False
            )
        )
        train_series, train_labels, train_ids = train_series[keep], train_labels[keep], train_ids[keep]
        if subject_sides is not None:
            subject_sides["trained_on"] = subject_sides["trained_on"][keep]
    return TrainingData(
        competition,
        classes,
        train_series,
        train_labels,
        validation_series,
        validation_labels,
        validation_ids,
        validation,
        noisy,
        std,
        np.asarray(train_ids),
        *scored,
        protocol,
        subject_sides,
    )


def inner_split(
    ids: np.ndarray, subjects: np.ndarray | None, part: np.ndarray, config: Config
) -> tuple[np.ndarray, np.ndarray]:
    """(trains, chooses) over all series: a CV fold's training part `part` (a mask) split for nested
    selection. With subjects, inner fold 0 of a GroupKFold of the part into cv.inner_folds folds
    chooses; without, the first 1/cv.inner_folds of the part in id order chooses and the cv.gap
    series after it are purged (only one block is held out, so a small part still splits). The rest
    of the part trains."""
    inside = np.flatnonzero(part)
    inner = config.cv.inner_folds
    if subjects is not None:
        if len(np.unique(subjects[inside])) < inner:
            raise DataError(
                f"the training part of cv.fold={config.cv.fold} holds {len(np.unique(subjects[inside]))} subjects, "
                f"too few for cv.inner_folds={inner} inner folds; lower cv.inner_folds or cv.folds"
            )
        assignment = fold_assignment(ids[inside], subjects[inside], inner, config.cv.gap, config.cv.repeat)
    else:
        assignment = np.ones(len(inside), dtype=np.int64)
        assignment[np.array_split(id_order(ids[inside]), inner)[0]] = 0
    trained = training_mask(ids[inside], None if subjects is None else subjects[inside], assignment, 0, config.cv.gap)
    if trained.sum() < 2 or not (assignment == 0).any():
        raise DataError(
            f"the training part of cv.fold={config.cv.fold} ({len(inside)} series) leaves nothing to train on beside "
            f"an inner block of 1/cv.inner_folds={inner} and its cv.gap={config.cv.gap} purged neighbours; raise cv.inner_folds"
        )
    trains, chooses = np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=bool)
    trains[inside[trained]] = True
    chooses[inside[assignment == 0]] = True
    return trains, chooses


def pooled_ids(splits: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The ids of several splits pooled for folding, and their subjects where every split names them."""
    ids = np.concatenate([split.ids for split in splits])
    if any(split.subjects is None for split in splits):
        return ids, None
    return ids, np.concatenate([split.subjects for split in splits])


def check_folds(config: Config) -> None:
    """Every repeat of this config's cross-validation can be cut into folds (the pool the folds
    share: training and validation series): refused before the first fold trains, not after."""
    competition = open_competition(config)
    ids, subjects = pooled_ids(
        [competition.train] + ([competition.validation] if competition.validation is not None else [])
    )
    cuts = [
        fold_assignment(ids, subjects, config.cv.folds, config.cv.gap, repeat) for repeat in range(config.cv.repeats)
    ]
    for repeat, cut in enumerate(cuts):
        if any(np.array_equal(cut, earlier) for earlier in cuts[:repeat]):
            raise DataError(
                f"cv.repeats={config.cv.repeats}: repeat {repeat + 1} cuts the {len(ids)} series into the same folds as an "
                "earlier one (too few series per block to move its boundaries further); lower cv.repeats"
            )
        if config.cv.inner_folds:  # and every fold's training part into inner folds
            for fold in range(config.cv.folds):
                part = training_mask(ids, subjects, cut, fold, config.cv.gap)
                inner_split(ids, subjects, part, fold_config(config, fold, repeat))


def fold_config(config: Config, fold: int, repeat: int = 0) -> Config:
    """The config of fold `fold` (of repeat `repeat`) of this config's cross-validation."""
    return dataclasses.replace(config, cv=dataclasses.replace(config.cv, fold=fold, repeat=repeat))


def too_small_to_validate(config: Config, competition: Competition) -> bool:
    """Whether this config's single run would choose its checkpoint on fewer than cv.min_validation
    series (a user's small competition): then training cross-validates instead."""
    if config.cv.fold != -1 or config.cv.refit:
        return False
    if competition.validation is not None:
        return len(competition.validation) < config.cv.min_validation
    subjects = competition.train.subjects
    if subjects is not None and len(np.unique(subjects)) < config.cv.folds:
        return False  # fold_assignment refuses it with its own message
    if subjects is None and len(competition.train) < config.cv.folds * (config.cv.gap + 2):
        return True
    return (
        int((fold_assignment(competition.train.ids, subjects, config.cv.folds, config.cv.gap) == 0).sum())
        < config.cv.min_validation
    )


def cv_definition(definitions: list[dict[str, Any]]) -> dict[str, Any]:
    """The selection definition of a cross-validation, from its folds' definitions."""
    return {
        **{key: value for key, value in definitions[0].items() if key not in ("validation", "validation_ids")},
        "validation": f"{len(definitions)}-fold cross-validation: "
        + definitions[0]["validation"].split(" (", 1)[-1].rstrip(")"),
        "validation_ids": short_hash([d["validation_ids"] for d in definitions], 16),
    }


def cv_selection_definition(config: Config) -> dict[str, Any]:
    """What this config's cross-validation is selected on, without training it."""
    return cv_definition(
        [
            selection_definition(fold_config(config, fold), load_training_data(fold_config(config, fold)))
            for fold in range(config.cv.folds)
        ]
    )


def selection_definition(config: Config, data: TrainingData) -> dict[str, Any]:
    """What a run's selection score means: two runs are compared ("the best run") only when these agree."""
    level = config.data.test_noise if config.train.select_on == "noisy" else 0.0
    ids = hashlib.sha256("\n".join(map(str, data.scored_ids)).encode()).hexdigest()[:16]
    protocol = {"protocol": data.protocol} if data.protocol is not None else {}
    return {
        **protocol,
        "competition": config.data.competition,
        "data": short_hash(read_datacard(config).get("inputs"), 16),
        "validation": data.validation,
        "validation_ids": ids,
        "select_on": config.train.select_on,
        "noise_profile": config.data.noise_profile,
        "noise_level": level,
        "draws": config.train.noise_seeds if level > 0 else 1,
        "seed": config.data.seed + SELECTION_SEED,
    }


# ---- the organizer's side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrganizerSide:
    """The answer side of an emulated competition; never used to train or to choose."""

    clean_series: np.ndarray  # the test series before the competition's noise
    labels: np.ndarray  # their class indices
    noise_unit: np.ndarray  # the clean-train std per channel the test noise was drawn in (data card)
    file_labels: np.ndarray  # class indices of the participant's noisy test file, in its order


def organizer_side(config: Config, competition: Competition, classes: tuple[int, ...]) -> OrganizerSide | None:
    private = config.private_dir / config.data.competition
    if not (private / CLEAN_TEST).is_file():
        return None
    with np.load(private / CLEAN_TEST) as archive:
        clean, ids = archive["series"], archive["id"].astype(str)
    solution = pd.read_csv(private / SOLUTION, dtype={"file": str}).set_index("file")
    unknown = sorted(set(competition.test.ids) - set(solution.index))
    if unknown:
        raise DataError(
            f"{private / SOLUTION}: no answer for test series {unknown[0]} of {competition.path}; run `make prepare` again"
        )
    labels = to_indices(solution.loc[ids, "activity"].to_numpy(), classes)
    card = read_datacard(config)
    noise_unit = np.array(list(card["noise"]["channel_std"].values()))
    file_labels = to_indices(solution.loc[competition.test.ids, "activity"].to_numpy(), classes)
    return OrganizerSide(clean, labels, noise_unit, file_labels)
