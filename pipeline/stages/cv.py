"""`make cv [EXP=...] [FOLDS=5]`: k-fold cross-validation of one configuration, subject-wise.

Every labeled training series (the competition's train and validation splits together) gets a
fold: whole subjects per fold where the competition names them (GroupKFold on subject ids), else
contiguous blocks in id order with a gap (pipeline.data.datasets.fold_assignment). Fold i is an ordinary
run (`cv.fold = i`: in the registry, reused when trained, resumed when killed). Its selection is
nested: everything that reads validation scores while it trains (the checkpoint, early stopping,
the learning-rate plateau, the EMA swap, the tuner's pruner) reads an inner fold of its own
training part (pipeline.data.datasets.inner_split; `cv.inner_folds`), and fold i itself is scored
once, by the model the run chose, so a fold score is read on series that chose nothing. The run
records the three sets in split.json (trained_on, chosen_on, scored_on, and their subjects).
`cv.inner_folds=0` is the protocol before 2026-12-05 (each fold chose on fold i and was scored on
it: optimistic), kept only to measure that optimism. The cross-validation itself is one more entry of the registry,
runs/<competition>_cv<k>_<model>_<regularizers>_<hash>/:
  config.json   the configuration (cv.fold = -1)
  run.json      kind "cv" and the fold runs' ids: `make predict RUN=cv:<id>` (or RUN=cv) averages them
  metrics.json  per noise level the mean and spread over folds of the fold scores (on each held-out
                fold); the selection score (mean over folds at the selection's noise level) with its
                definition, whose `protocol` says how the folds chose;
                the fold models' organizer-side test scores, averaged (a report, never a ranking key)
`make cv REFIT=1` then trains one more run on every labeled series for the folds' median best
epoch count, early stopping off (`cv.refit`): the CV chose the epoch count, so the refit needs no
held-out series; run.json names it (`refit`), and `make predict RUN=<its id>` uses it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config, ConfigError
from pipeline.data.datasets import check_folds, cv_definition, fold_config
from pipeline.log import log
from pipeline.progress import Progress
from pipeline.runs import tracking, training
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import cv_id_for, model_tag, regularizer_tag
from pipeline.runtime import backend_name


def summarize_levels(tables: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """{level: {mean, std, min, max}} over folds of each fold's mean score."""
    return {
        level: {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
        }
        for level in tables[0]
        for values in [[table[level]["mean"] for table in tables]]
    }


def cv_metrics(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """One registry entry's metrics from the folds' metrics.json."""
    return {
        "monitor": fold_metrics[0]["monitor"],
        "best_epoch": int(np.median([m["best_epoch"] for m in fold_metrics])),
        "best_epochs": [m["best_epoch"] for m in fold_metrics],
        "epochs_run": int(sum(m["epochs_run"] for m in fold_metrics)),
        "train_seconds": round(float(sum(m["train_seconds"] for m in fold_metrics)), 1),
        "peak_rss_mb": max(m["peak_rss_mb"] for m in fold_metrics),
        **cv_scores(fold_metrics),
    }


def cv_scores(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The scores of a CV entry from its folds' metrics.json: validation by noise level, the selection
    (mean, spread and every fold's score) and the fold models' test scores averaged."""
    definition = cv_definition([metrics["selection"]["definition"] for metrics in fold_metrics])
    folds = [metrics["selection"]["score"] for metrics in fold_metrics]
    metrics: dict[str, Any] = {
        "validation": summarize_levels([m["validation"] for m in fold_metrics]),
        "selection": {
            "definition": definition,
            "score": float(np.mean(folds)),
            "std": float(np.std(folds)),
            "folds": folds,
        },
    }
    if all("test" in m for m in fold_metrics):
        metrics["test"] = {
            "note": "mean over the fold models of their organizer-side scores; reported, never used for selection",
            "competition_file": float(np.mean([m["test"]["competition_file"] for m in fold_metrics])),
            "noise_levels": summarize_levels([m["test"]["noise_levels"] for m in fold_metrics]),
        }
    return metrics


def refit_config(config: Config, epochs: int) -> Config:
    """The config of a refit: every labeled series, `epochs` epochs, no early stopping."""
    return dataclasses.replace(
        config,
        cv=dataclasses.replace(config.cv, refit=True),
        train=dataclasses.replace(config.train, epochs=epochs, early_stopping=False),
    )


def cross_validate(
    config: Config, experiment: str = "", callbacks_for: Any = None, refit: bool = False, force: bool = False
) -> Path:
    """Train (or reuse) every fold and write the cross-validation's registry entry; returns its folder.
    `callbacks_for(fold_run_config, index)`: extra Keras callbacks for a fold's training (the tuner's
    pruning); `index` counts the fold runs, repeat by repeat.
    `refit`: then train on every labeled series for the folds' median best epoch count."""
    import keras

    if config.cv.fold != -1:
        raise ConfigError(f"cv.fold={config.cv.fold}: make cv sets the fold of each run itself; leave cv.fold at -1")
    check_folds(config)
    cv_id = cv_id_for(config)
    folder = RunFolder.of(config, cv_id)
    fold_dirs = []
    progress = Progress(config.cv.repeats * config.cv.folds)
    for repeat in range(config.cv.repeats):
        for fold in range(config.cv.folds):
            run_config = fold_config(config, fold, repeat)
            where = f"repeat {repeat + 1}/{config.cv.repeats}, " if config.cv.repeats > 1 else ""
            progress.step(f"[{where}fold {fold + 1}/{config.cv.folds}] {cv_id}")
            extra = tuple(callbacks_for(run_config, len(fold_dirs))) if callbacks_for else ()
            fold_dirs.append(training.train(run_config, experiment=f"cv:{cv_id}", force=force, callbacks=extra))
            keras.backend.clear_session()
    metrics = cv_metrics([RunFolder(run_dir).metrics() for run_dir in fold_dirs])
    metrics["selection"]["repeats"] = config.cv.repeats
    first = RunFolder(fold_dirs[0]).lineage()
    refit_run = ""
    if refit:
        log.info(f"[refit] {metrics['best_epoch']} epochs (the folds' median best) on every labeled series")
        refit_run = training.train(refit_config(config, metrics["best_epoch"]), experiment=f"cv:{cv_id}:refit").name
    lineage = Lineage(
        run_id=cv_id,
        kind="cv",
        experiment=experiment,
        competition=config.data.competition,
        model=model_tag(config),
        regularizer=regularizer_tag(config),
        backend=backend_name(),
        folds=[run_dir.name for run_dir in fold_dirs],
        refit=refit_run or None,
        classes=first.classes,
        channels=first.channels,
        series_shape=first.series_shape,
        data_inputs=first.data_inputs,
    )
    with folder.writing():
        folder.finish_entry(config.to_dict(), lineage, metrics)
    tracking.mirror_cv(config, folder.path)
    selection = metrics["selection"]
    levels = "  ".join(
        f"{level}: {value['mean']:.3f} ± {value['std']:.3f}" for level, value in metrics["validation"].items()
    )
    log.info(
        f"cross-validated {cv_id}: selection score {selection['score']:.4f} ± {selection['std']:.4f} over {len(fold_dirs)} folds "
        f"({selection['definition']['select_on']}, noise {selection['definition']['noise_level']:g}); validation by noise level  {levels}; "
        f"median best epoch {metrics['best_epoch']}" + (f"; refit: {refit_run}" if refit else "")
    )
    return folder.path


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.cv", __doc__)
    parser.add_argument(
        "--refit",
        action="store_true",
        help="then train on every labeled series for the CV's median best epoch count (REFIT=1)",
    )
    args = parser.parse_args(argv)
    return run_stage(
        lambda config: cross_validate(config, experiment=Path(args.exp).stem if args.exp else "", refit=args.refit),
        args,
        keras=True,
    )


if __name__ == "__main__":
    sys.exit(main())
