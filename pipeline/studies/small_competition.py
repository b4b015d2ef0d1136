"""`make small-competition [DATASET=BasicMotions]`: a small public dataset as a user would bring it,
through the default flow.

The datasets are the classification sets shipped inside the aeon package, so this works offline.
The default, BasicMotions, is a smartwatch's 3-axis accelerometer and gyroscope at 10 Hz, 10 s
series, 4 classes (badminton, running, standing, walking), 40 training and 40 test series from 4
students. Others give other shapes: `DATASET=PickupGestureWiimoteZ` (one channel, a Wii remote's
z acceleration, 10 gestures, 50 + 50 series of 29 to 361 steps), `ACSF1` (one channel, 1,460
steps, 10 classes, 100 + 100), `GunPoint`, `ArrowHead`, `OSULeaf`, `ItalyPowerDemand`,
`JapaneseVowels` (12 channels, 9 classes, 270 + 370). A dataset of unequal lengths is resampled,
series by series, to its longest length by linear interpolation (the UCR archive's own way of
making such sets equal-length), because a competition's series share one shape.

The chosen dataset is written in the original competition layout (`train/a01..aNN/<id>.csv`,
`test/<id>.csv`, `sample_submission.csv`) under data/external/<dataset, lower case>/, its test
series noised like the classroom competition's (data.noise_profile at data.test_noise x the
clean-train std of each channel). The answer key stays outside the folder. The make target then
runs the real stages on it (`make data SOURCE=local:...`, prepare, train, predict) and `score`
scores the newest submission against the key, beside MiniRocket (aeon) fitted on the same training
series with and without one noised copy: what a user would run instead.

  write   data/external/<name>/ (the competition) and data/external/<name>_solution.csv
  score   the newest <name> submission -> reports/<name>/summary.{json,md}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data import competition as comp
from pipeline.data.signals import add_noise, channel_std
from pipeline.errors import DataError
from pipeline.files import atomic_folder, write_csv_atomic, write_json_atomic
from pipeline.log import log

DEFAULT_DATASET = "BasicMotions"
CHANNEL_NAMES = {"BasicMotions": ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")}
NOISE_SEED_OFFSET = 3  # the test noise draw, apart from the noised copy's


def bundled_folder() -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def bundled_datasets() -> list[str]:
    """The classification sets aeon ships with a _TRAIN.ts and a _TEST.ts file."""
    return sorted(
        folder.name
        for folder in bundled_folder().iterdir()
        if (folder / f"{folder.name}_TRAIN.ts").is_file() and (folder / f"{folder.name}_TEST.ts").is_file()
    )


def equal_length(series: list[np.ndarray], length: int) -> np.ndarray:
    """(C, T_i) series of unequal lengths -> (n, length, C), each resampled by linear interpolation."""
    resampled = []
    for one in series:
        steps = np.linspace(0, one.shape[1] - 1, length)
        resampled.append(np.stack([np.interp(steps, np.arange(one.shape[1]), channel) for channel in one], axis=-1))
    return np.stack(resampled).astype(np.float32)


def bundled_split(
    split: str, dataset: str = DEFAULT_DATASET, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """aeon's bundled <dataset>_{TRAIN,TEST}.ts -> series (n, T, C) float32, class names (n,). Series of
    unequal lengths are resampled to `length` (default: the longest of this split)."""
    from aeon.datasets import load_from_ts_file

    path = bundled_folder() / dataset / f"{dataset}_{split.upper()}.ts"
    if not path.is_file():
        raise DataError(
            f"{path}: missing; the installed aeon ships these classification sets: {', '.join(bundled_datasets())}"
        )
    series, names = load_from_ts_file(str(path))
    names = np.asarray(names).astype(str)
    if isinstance(series, np.ndarray):
        return np.transpose(series, (0, 2, 1)).astype(np.float32), names
    return equal_length(series, length or max(one.shape[1] for one in series)), names


def class_order(names: np.ndarray) -> tuple[str, ...]:
    """Class names in their natural order: numerically where every name is a number ('2' before '10')."""
    unique = sorted(set(names.tolist()))
    numeric = all(name.lstrip("-").isdigit() for name in unique)
    return tuple(sorted(unique, key=int) if numeric else unique)


def channel_names(dataset: str, channels: int) -> tuple[str, ...]:
    return CHANNEL_NAMES.get(dataset) or (
        ("value",) if channels == 1 else tuple(f"channel_{k + 1}" for k in range(channels))
    )


def competition_name(dataset: str) -> str:
    return dataset.lower()


def build(
    config: Config, dataset: str = DEFAULT_DATASET
) -> tuple[dict[str, comp.Split], pd.DataFrame, tuple[str, ...]]:
    """The participant splits (test noised, ids shuffled) and the answer key; activities numbered in class order."""
    train, train_names = bundled_split("train", dataset)
    test, test_names = bundled_split("test", dataset, length=train.shape[1])
    classes = class_order(train_names)
    if len(classes) > len(train) // 2:
        raise DataError(
            f"{dataset}: {len(classes)} distinct targets in {len(train)} training series: a regression set, not a classification one"
        )
    if set(test_names) - set(classes):
        raise DataError(f"{dataset}: test classes {sorted(set(test_names) - set(classes))} never occur in training")
    rng = np.random.default_rng(config.data.seed)
    ids = np.array([f"{k:03d}" for k in rng.permutation(len(train) + len(test))])
    number = {name: index + 1 for index, name in enumerate(classes)}
    train_labels = np.array([number[name] for name in train_names])
    test_labels = np.array([number[name] for name in test_names])
    noisy_test = add_noise(
        test,
        config.data.noise_profile,
        config.data.test_noise,
        channel_std(train),
        config.data.seed + NOISE_SEED_OFFSET,
    )
    splits = {
        "train": comp.Split(train, ids[: len(train)], train_labels),
        "test": comp.Split(noisy_test, ids[len(train) :]),
    }
    solution = pd.DataFrame({"file": ids[len(train) :], "activity": test_labels})
    return splits, solution, classes


def external(config: Config, dataset: str = DEFAULT_DATASET) -> tuple[Path, Path]:
    folder, name = config.path("data") / "external", competition_name(dataset)
    return folder / name, folder / f"{name}_solution.csv"


def write(config: Config, dataset: str = DEFAULT_DATASET) -> Path:
    folder, key = external(config, dataset)
    splits, solution, classes = build(config, dataset)
    channels = channel_names(dataset, splits["train"].series.shape[2])
    with atomic_folder(folder) as temp:
        comp.write_competition(temp, "csv", channels, splits, default_activity=1)
    write_csv_atomic(key, solution, index=False)
    log.info(
        f"wrote {folder} (train {len(splits['train'])}, test {len(splits['test'])} series of "
        f"{splits['train'].series.shape[1]}x{len(channels)}; {len(classes)} classes: {', '.join(classes)}) and its answer key {key}"
    )
    return folder


def accuracy(submission: pd.DataFrame, solution: pd.DataFrame) -> float:
    merged = solution.merge(
        submission.assign(file=submission["file"].str.removesuffix(".csv")),
        on="file",
        suffixes=("", "_submitted"),
        how="left",
    )
    return float((merged["activity"] == merged["activity_submitted"]).mean())


def newest_submission(config: Config, name: str) -> Path:
    found = sorted(config.path("submissions").glob(f"{name}_*.csv"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise DataError(f"{config.path('submissions')}: no {name}_*.csv; run `make predict COMPETITION={name}` first")
    return found[-1]


def score(config: Config, dataset: str = DEFAULT_DATASET) -> Path:
    from pipeline.models.baselines import make_minirocket

    name = competition_name(dataset)
    folder, key = external(config, dataset)
    if not key.is_file():
        raise DataError(f"{key}: missing; run `make small-competition DATASET={dataset}` (or its `write` step) first")
    solution = pd.read_csv(key, dtype={"file": str})
    submission_path = newest_submission(config, name)
    default = accuracy(comp.read_submission(submission_path), solution)
    loaded = comp.load_competition(folder)
    train, test = loaded.train, loaded.test
    copy = add_noise(
        train.series, config.data.noise_profile, config.data.test_noise, channel_std(train.series), config.data.seed
    )
    references = {}
    for label, (series, labels) in {
        "MiniRocket": (train.series, train.labels),
        "MiniRocket + 1 noised copy": (
            np.concatenate([train.series, copy]),
            np.concatenate([train.labels, train.labels]),
        ),
    }.items():
        model = make_minirocket(config.train.seed).fit(series, labels)
        predicted = model.predict(test.series)
        references[label] = accuracy(pd.DataFrame({"file": test.ids, "activity": predicted}), solution)
    summary = {
        "competition": name,
        "dataset": dataset,
        "test_series": len(solution),
        "test_noise": config.data.test_noise,
        "submission": {"file": submission_path.name, "accuracy": round(default, 4)},
        "peers": {k: round(v, 4) for k, v in references.items()},
    }
    report = config.path("reports") / name
    lines = [
        f"| {name} | {value:.3f} |"
        for name, value in ((f"recurrent: the newest submission, {submission_path.name}", default), *references.items())
    ]
    with atomic_folder(report) as temp:  # both files or neither
        write_json_atomic(temp / "summary.json", summary)
        (temp / "summary.md").write_text(
            f"# {name}: noisy test accuracy ({len(solution)} series)\n\n| model | accuracy |\n|:--|--:|\n"
            + "\n".join(lines)
            + "\n"
        )
    log.info(
        f"{name}: {submission_path.name} {default:.3f}; "
        + ", ".join(f"{k} {v:.3f}" for k, v in references.items())
        + f" -> {report}/summary.md"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.small_competition", __doc__)
    parser.add_argument("action", choices=("write", "score"))
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="an aeon-bundled classification set (DATASET=)")
    args = parser.parse_args(argv)
    action = write if args.action == "write" else score
    return run_stage(lambda config: action(config, args.dataset), args)


if __name__ == "__main__":
    sys.exit(main())
