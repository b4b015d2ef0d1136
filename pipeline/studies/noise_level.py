"""`make noise-level [COMPETITION=...]`: how noisy is the test file, series by series?

The test file carries no labels and, on Kaggle, no word on its noise. Its white noise shows in each
series' second differences, above the roughness the clean training series have of their own
(pipeline.data.signals.NoiseLevelEstimator, fitted on the training series as the participant has
them, in units of their std per channel: the unit of every noise level here). This prints, and
writes to reports/noise_level/<competition>/noise_level.{json,md}:

- the test file's estimated levels: median, 10th and 90th percentiles, mean;
- where the organizer's side exists (the HAPT competitions prepared here): the estimator's error
  against the true level of each test-file series (the std of its noise, from the clean copy), and
  on the test subjects noised at each level of `train.noise_levels` (the evaluation's noise draws).

The estimate is what a noise-aware blend can weigh its members by, and it suggests a level for the
noise layer (`regularization.gaussian_noise`) where the test noise is unknown. It is a description
of the test file, not a score: it reads no label and chooses nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.datasets import load_training_data, organizer_side
from pipeline.data.scoring import noise_seed
from pipeline.data.signals import NoiseLevelEstimator, add_noise
from pipeline.errors import DataError
from pipeline.files import atomic_files
from pipeline.log import log


def summary(levels: np.ndarray) -> dict[str, float]:
    return {
        "median": float(np.median(levels)),
        "p10": float(np.quantile(levels, 0.1)),
        "p90": float(np.quantile(levels, 0.9)),
        "mean": float(levels.mean()),
    }


def errors(estimated: np.ndarray, true: np.ndarray | float) -> dict[str, float]:
    """The estimator's bias and mean absolute error against the true levels."""
    return {"bias": float((estimated - true).mean()), "mean absolute error": float(np.abs(estimated - true).mean())}


def true_levels(noisy: np.ndarray, clean: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Each series' realized noise level: the RMS of its noise over time and channels, in `unit`s."""
    return np.sqrt((((noisy - clean) / unit) ** 2).mean(axis=(1, 2)))


def noise_report(config: Config) -> dict[str, Any]:
    data = load_training_data(config)
    if data.train_series.shape[1] < 3:
        raise DataError(
            f"{data.competition.path}: series of {data.train_series.shape[1]} steps; "
            "estimating a noise level needs at least 3"
        )
    estimator = NoiseLevelEstimator.fit(data.train_series, data.train_std)
    test = data.competition.test.series
    report: dict[str, Any] = {
        "competition": config.data.competition,
        "test file": {"series": len(test), **summary(estimator.levels(test))},
        "channel weights": [round(float(weight), 4) for weight in estimator.weights],
    }
    host = organizer_side(config, data.competition, data.classes)
    if host is not None:
        clean_file = host.clean_series  # make prepare writes test_clean.npz in the test file's order
        if clean_file.shape != test.shape:
            raise DataError(f"{config.private_dir}: the clean test series do not match the test file's {len(test)}")
        estimated = estimator.levels(test)
        truth = true_levels(test.astype(np.float64), clean_file.astype(np.float64), host.noise_unit)
        report["test file"].update({"true": summary(truth), **errors(estimated, truth)})
        rows = []
        for level in config.train.noise_levels:
            noisy = add_noise(
                host.clean_series,
                config.data.noise_profile,
                level,
                host.noise_unit,
                noise_seed(config.train.seed, level, 0),
            )
            levels = estimator.levels(noisy)
            rows.append({"level": level, **summary(levels), **errors(levels, level)})
        report["test subjects"] = rows
    return report


def markdown(report: dict[str, Any]) -> str:
    file = report["test file"]
    lines = [
        f"# How noisy is {report['competition']}'s test file?",
        "",
        "Each series' white-noise level, estimated from its second differences above the clean training series' "
        "(x the training series' std per channel); a description, not a score.",
        "",
        f"- the test file ({file['series']} series): median {file['median']:.3f}, "
        f"10th-90th percentile {file['p10']:.3f}-{file['p90']:.3f}, mean {file['mean']:.3f}",
    ]
    if "true" in file:
        true = file["true"]
        lines.append(
            f"- its true levels (organizer's side): median {true['median']:.3f}, mean {true['mean']:.3f}; the "
            f"estimate's bias {file['bias']:+.3f}, mean absolute error {file['mean absolute error']:.3f} per series"
        )
    if "test subjects" in report:
        table = pd.DataFrame(report["test subjects"]).rename(columns={"level": "true level"})
        lines += [
            "",
            "The test subjects, noised at each level (one draw):",
            "",
            table.to_markdown(index=False, floatfmt=".3f"),
        ]
    return "\n".join(lines) + "\n"


def noise_level(config: Config) -> Path:
    report = noise_report(config)
    folder = config.path("reports", "noise_level", config.data.competition)
    page = markdown(report)
    with atomic_files(folder / "noise_level.json", folder / "noise_level.md") as (json_path, markdown_path):
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        markdown_path.write_text(page)
    print(page, end="")
    log.info(f"wrote {folder / 'noise_level.json'} and noise_level.md")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.noise_level", __doc__)
    return run_stage(noise_level, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
