"""Scoring a model the one way every stage, study and peer does: the selection score (what "the best
run" compares, and a CV fold's score), validation scores by noise level, and the organizer-side test
scores, reported beside a run and never used to choose.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Config
from pipeline.data.datasets import TrainingData, organizer_side, selection_definition
from pipeline.data.scoring import accuracy_at_noise, predicted_classes


def selection_score(model: Any, config: Config, data: TrainingData, fitted_on: int | None = None) -> dict[str, Any]:
    """The score "the best run" compares and a CV fold's score: accuracy on the scored series (a
    fold run's held-out fold, which chose nothing; else the validation split) at the selection's
    noise level, on noise draws shared by every run of the competition (seeded by data.seed, not the
    run's own seed). Recurrent fold runs, ensembles and peers are all scored by this one function.
    `fitted_on`: how many distinct series the model was fitted on (default: the training series);
    recorded with the counts chosen and scored on, for the paired test's held-out/training ratio."""
    definition = selection_definition(config, data)
    level = definition["noise_level"]
    table = accuracy_at_noise(
        model,
        data.scored_series,
        data.scored_labels,
        (level,),
        definition["draws"],
        definition["noise_profile"],
        data.train_std,
        definition["seed"],
    )
    series = {
        "trained_on": len(data.train_series) if fitted_on is None else fitted_on,
        "chosen_on": 0 if fitted_on is not None else len(data.validation_series),
        "scored_on": len(data.scored_series),
    }
    return {"definition": definition, "score": table[f"{level:g}"]["mean"], "series": series}


def validation_scores(model: Any, config: Config, data: TrainingData) -> dict[str, Any]:
    """Accuracy on the scored series (see selection_score) at each of train.noise_levels (mean and
    spread over draws)."""
    train = config.train
    return accuracy_at_noise(
        model,
        data.scored_series,
        data.scored_labels,
        train.noise_levels,
        train.noise_seeds,
        config.data.noise_profile,
        data.train_std,
        train.seed,
    )


def test_scores(model: Any, config: Config, data: TrainingData) -> dict[str, Any] | None:
    """The organizer-side test scores (data/private), reported beside a run; None where there is no answer key."""
    host = organizer_side(config, data.competition, data.classes)
    if host is None:
        return None
    train = config.train
    return {
        "note": "organizer-side scores from data/private; reported, never used for training or selection",
        "competition_file": float((predicted_classes(model, data.competition.test.series) == host.file_labels).mean()),
        "noise_levels": accuracy_at_noise(
            model,
            host.clean_series,
            host.labels,
            train.noise_levels,
            train.noise_seeds,
            config.data.noise_profile,
            host.noise_unit,
            train.seed + 99,
        ),
    }


def score_row(model: Any, config: Config, data: TrainingData) -> dict[str, float]:
    """One table row of a model that chose nothing (a peer, a baseline): `val@<level>` from
    validation_scores and, with the organizer side, `test@<level>` and `test file` from test_scores:
    the same series, draws and seeds as every run's metrics."""
    row = {f"val@{level}": value["mean"] for level, value in validation_scores(model, config, data).items()}
    test = test_scores(model, config, data)
    if test is not None:
        row.update({f"test@{level}": value["mean"] for level, value in test["noise_levels"].items()})
        row["test file"] = test["competition_file"]
    return row


def test_summary(test: dict[str, Any]) -> str:
    levels = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in test["noise_levels"].items())
    return f"host-side test accuracy by noise level  {levels}; on the competition's test file {test['competition_file']:.3f}"
