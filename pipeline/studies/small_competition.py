"""`make small-competition`: a small public dataset as a user would bring it, through the default flow.

BasicMotions (shipped inside the aeon package, so it works offline: a smartwatch's 3-axis
accelerometer and gyroscope at 10 Hz, 10 s series, 4 classes: badminton, running, standing,
walking; 40 training and 40 test series from 4 students) is written in the original competition
layout (`train/a01..a04/<id>.csv`, `test/<id>.csv`, `sample_submission.csv`), its test series
noised like the classroom competition's (data.noise_profile at data.test_noise x the clean-train
std of each channel). The answer key stays outside the folder. The make target then runs the
real stages on it (`make data SOURCE=local:...`, prepare, train, predict) and `score` scores the
newest submission against the key, beside MiniRocket (aeon) fitted on the same training series with and
without one noised copy: what a user would run instead.

  write   data/external/basicmotions/ (the competition) and data/external/basicmotions_solution.csv
  score   the newest basicmotions submission -> reports/basicmotions/summary.{json,md}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import Config, load_config
from pipeline.data import competition as comp
from pipeline.data.signals import add_noise, channel_std
from pipeline.errors import DataError
from pipeline.files import atomic_folder, write_csv_atomic, write_json_atomic

NAME = "basicmotions"
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
NOISE_SEED_OFFSET = 3  # the test noise draw, apart from the noised copy's


def bundled_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """aeon's bundled BasicMotions_{TRAIN,TEST}.ts -> series (n, T, C) float32, class names (n,)."""
    import aeon.datasets
    from aeon.datasets import load_from_ts_file

    path = Path(aeon.datasets.__file__).parent / "data" / "BasicMotions" / f"BasicMotions_{split.upper()}.ts"
    if not path.is_file():
        raise DataError(f"{path}: missing; the installed aeon does not ship BasicMotions")
    series, names = load_from_ts_file(str(path))
    return np.transpose(series, (0, 2, 1)).astype(np.float32), np.asarray(names).astype(str)


def build(config: Config) -> tuple[dict[str, comp.Split], pd.DataFrame, tuple[str, ...]]:
    """The participant splits (test noised, ids shuffled) and the answer key; activities numbered in class-name order."""
    train, train_names = bundled_split("train")
    test, test_names = bundled_split("test")
    classes = tuple(sorted(set(train_names)))
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


def external(config: Config) -> tuple[Path, Path]:
    folder = config.path("data") / "external"
    return folder / NAME, folder / f"{NAME}_solution.csv"


def write(config: Config) -> Path:
    folder, key = external(config)
    splits, solution, classes = build(config)
    with atomic_folder(folder) as temp:
        comp.write_competition(temp, "csv", CHANNELS, splits, default_activity=1)
    write_csv_atomic(key, solution, index=False)
    print(
        f"wrote {folder} (train {len(splits['train'])}, test {len(splits['test'])} series of "
        f"{splits['train'].series.shape[1]}x{len(CHANNELS)}; activities {', '.join(classes)}) and its answer key {key}"
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


def newest_submission(config: Config) -> Path:
    found = sorted(config.path("submissions").glob(f"{NAME}_*.csv"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise DataError(f"{config.path('submissions')}: no {NAME}_*.csv; run `make predict COMPETITION={NAME}` first")
    return found[-1]


def score(config: Config) -> Path:
    from pipeline.models.baselines import make_minirocket

    folder, key = external(config)
    if not key.is_file():
        raise DataError(
            f"{key}: missing; run `python -m pipeline.studies.small_competition write` (or `make small-competition`) first"
        )
    solution = pd.read_csv(key, dtype={"file": str})
    submission_path = newest_submission(config)
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
        "competition": NAME,
        "test_series": len(solution),
        "test_noise": config.data.test_noise,
        "submission": {"file": submission_path.name, "accuracy": round(default, 4)},
        "peers": {k: round(v, 4) for k, v in references.items()},
    }
    report = config.path("reports") / NAME
    lines = [
        f"| {name} | {value:.3f} |"
        for name, value in ((f"recurrent: the newest submission, {submission_path.name}", default), *references.items())
    ]
    with atomic_folder(report) as temp:  # both files or neither
        write_json_atomic(temp / "summary.json", summary)
        (temp / "summary.md").write_text(
            f"# {NAME}: noisy test accuracy ({len(solution)} series)\n\n| model | accuracy |\n|:--|--:|\n"
            + "\n".join(lines)
            + "\n"
        )
    print(
        f"{NAME}: {submission_path.name} {default:.3f}; "
        + ", ".join(f"{k} {v:.3f}" for k, v in references.items())
        + f" -> {report}/summary.md"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.small_competition", __doc__)
    parser.add_argument("action", choices=("write", "score"))
    args = parser.parse_args(argv)
    action = write if args.action == "write" else score
    return run_stage(lambda: action(load_config(args.exp, overrides(args))))


if __name__ == "__main__":
    sys.exit(main())
