"""Scoring, in one place: accuracy under test noise, Kaggle's submission checks, the leaderboard's score.

Every stage that scores a model under noise (train's metrics, evaluate's curve, compare's baselines)
draws the noise here, with one seed formula, so the same level, draw and base seed give the same
noisy series everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.signals import add_noise
from pipeline.errors import DataError
from pipeline.log import log


def noise_seed(base_seed: int, level: float, draw: int) -> int:
    """The seed of one noise draw: distinct for every level (in hundredths) and draw."""
    return base_seed + 1000 * draw + int(round(level * 100))


def predicted_classes(model: Any, series: np.ndarray) -> np.ndarray:
    return model.predict(series, batch_size=1024, verbose=0).argmax(-1)


def noise_draws(
    predictors: dict[str, Any],
    clean: np.ndarray,
    labels: np.ndarray,
    levels: tuple[float, ...],
    draws: int,
    profile: str,
    noise_unit: np.ndarray,
    base_seed: int,
    progress: bool = False,
) -> pd.DataFrame:
    """Accuracy of every predictor at every noise level and draw (one draw at level 0, where there is
    no noise): columns predictor, level, draw, accuracy. `noise_unit`: the per-channel std a level is
    counted in. `progress`: one line per level (long curves)."""
    rows = []
    for step, level in enumerate(levels):
        if progress:
            log.info(f"  noise level {level:g} ({step + 1}/{len(levels)}), {len(predictors)} predictor(s)")
        for draw in range(draws if level > 0 else 1):
            noisy = add_noise(clean, profile, float(level), noise_unit, noise_seed(base_seed, float(level), draw))
            for name, predictor in predictors.items():
                accuracy = float((predicted_classes(predictor, noisy) == labels).mean())
                rows.append({"predictor": name, "level": float(level), "draw": draw, "accuracy": accuracy})
    return pd.DataFrame(rows)


def accuracy_at_noise(
    model: Any,
    clean: np.ndarray,
    labels: np.ndarray,
    levels: tuple[float, ...],
    draws: int,
    profile: str,
    noise_unit: np.ndarray,
    base_seed: int,
) -> dict[str, dict[str, float]]:
    """{level: {mean, std, min, max}} of `model`'s accuracy over the noise draws of each level."""
    table = noise_draws({"model": model}, clean, labels, levels, draws, profile, noise_unit, base_seed)
    return {
        f"{level:g}": {
            "mean": float(rows.mean()),
            "std": float(rows.std(ddof=0)),
            "min": float(rows.min()),
            "max": float(rows.max()),
        }
        for level, rows in table.groupby("level", sort=True)["accuracy"]
    }


# ---- submissions ---------------------------------------------------------------------------------


def validate_submission(table: pd.DataFrame, sample: pd.DataFrame, activities: tuple[int, ...], name: str) -> None:
    """Kaggle's checks: same header, the sample's ids exactly, no duplicates, only valid labels."""
    if tuple(table.columns) != tuple(sample.columns):
        raise DataError(
            f"{name}: header {','.join(map(str, table.columns))} differs from the sample submission's {','.join(sample.columns)}"
        )
    ids = table["file"].astype(str)
    if ids.duplicated().any():
        raise DataError(f"{name}: duplicate file {ids[ids.duplicated()].iloc[0]!r}")
    missing, extra = set(sample["file"]) - set(ids), set(ids) - set(sample["file"])
    if missing or extra:
        raise DataError(
            f"{name}: {len(missing)} ids of the sample submission missing, {len(extra)} unknown ids (e.g. {sorted(missing or extra)[0]!r})"
        )
    labels = pd.to_numeric(table["activity"], errors="coerce")
    invalid = labels.isna() | ~labels.isin(activities)
    if invalid.any():
        raise DataError(
            f"{name}: invalid activity {table['activity'][invalid].iloc[0]!r} (valid: {', '.join(map(str, activities))})"
        )


def score(submission: pd.DataFrame, solution: pd.DataFrame) -> tuple[float, float]:
    """(public, private) accuracy of a validated submission against a `file,activity,Usage` answer key."""
    merged = solution.merge(submission.astype({"file": str}), on="file", suffixes=("_true", "_predicted"))
    correct = merged["activity_true"].astype(int) == merged["activity_predicted"].astype(int)
    public = merged["Usage"] == "Public"
    return float(correct[public].mean()), float(correct[~public].mean())


def submission_message(path: Path, message: str = "") -> str:
    """The message a submission goes out with: the one given, else its lineage's (written by predict), else its name."""
    lineage = path.with_suffix(".json")
    return message or (json.loads(lineage.read_text()).get("message", "") if lineage.is_file() else "") or path.stem
