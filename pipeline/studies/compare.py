"""`make compare`: the regularizer grid: which regularizer wins under test noise?

Every cell of GRID (a regularizer and its strength) is trained for every model of
`compare.models` and `compare.seeds` seeds, on the budget of the [train] section
(experiments/compare.toml: a small, documented one). Each cell is an ordinary run, listed by
`make runs`; a cell already trained is reused. The result, in reports/compare/<competition>/:
  compare.csv   one row per run: model, cell, seed, validation and test accuracy per noise level,
                and the scikit-learn baselines (model "baselines") scored on the same series and noise
  summary.md    mean and spread across seeds per model, cell and test-noise level, and every cell
                against its model's first-ranked one, paired seed by seed
  compare.png   accuracy at each test-noise level per regularizer, error bars across seeds
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import Config, ConfigError, load_config
from pipeline.data.datasets import load_training_data
from pipeline.errors import DataError
from pipeline.files import atomic_files
from pipeline.log import log
from pipeline.progress import Progress
from pipeline.runs import tracking
from pipeline.runs.folder import RunFolder
from pipeline.runs.scoring import score_row

# Regularizer cells: name -> config overrides. Strengths are the usual ones for HAR; noise levels
# are in units of each feature's std, like the test noise.
GRID: dict[str, list[str]] = {
    "none": [],
    "l1": ["regularization.l1=1e-4", "regularization.recurrent_l1=1e-4"],
    "l2": ["regularization.l2=1e-3", "regularization.recurrent_l2=1e-3"],
    "l1l2": ["regularization.l1=1e-5", "regularization.l2=1e-3", "regularization.recurrent_l2=1e-3"],
    "dropout": ["regularization.dropout=0.3"],
    "gaussian_noise": ["regularization.gaussian_noise=0.5"],
    "jitter": ["augment.jitter=0.5"],
    "scaling": ["augment.scaling=0.2"],
    "magnitude_warp": ["augment.magnitude_warp=0.2"],
    "time_warp": ["augment.time_warp=0.2"],
    "rotation": ["augment.rotation_degrees=15"],
    "permutation": ["augment.permutation_segments=2"],
    "channel_dropout": ["augment.channel_dropout=0.1"],
    "augment_all": [
        "augment.jitter=0.5",
        "augment.scaling=0.1",
        "augment.magnitude_warp=0.1",
        "augment.time_warp=0.1",
        "augment.rotation_degrees=10",
    ],
    "noised_copies": ["augment.noised_copies=4", "augment.noised_copies_level=0.5"],
    "no_early_stopping": ["train.early_stopping=false"],
    "combined": [
        "regularization.gaussian_noise=0.5",
        "augment.noised_copies=2",
        "regularization.dropout=0.2",
        "regularization.l2=1e-4",
    ],
}
# How each compared model differs from the defaults: `stacked` is a deeper unidirectional stack
# with residual shortcuts, so the comparison covers two different architectures.
MODEL_VARIANTS: dict[str, list[str]] = {
    "bilstm": ["model.name=bilstm"],
    "stacked": ["model.name=stacked", "model.bidirectional=false", "model.layers=3", "model.residual=true"],
}


def cell_config(
    base: Config, base_overrides: list[str], experiment: str | None, model: str, cell: str, seed: int
) -> Config:
    if cell not in GRID:
        raise ConfigError(f"unknown compare cell {cell!r} (known: {', '.join(GRID)})")
    variant = MODEL_VARIANTS.get(model, [f"model.name={model}"])
    return load_config(experiment, [*base_overrides, *variant, *GRID[cell], f"train.seed={seed}"])


def run_grid(config: Config, experiment: str | None, overrides: list[str]) -> pd.DataFrame:
    """Train (or reuse) every cell; one row per run with its scores."""
    import keras

    from pipeline.runs import training

    cells = list(config.compare.cells) or list(GRID)
    rows = []
    progress = Progress(len(config.compare.models) * len(cells) * config.compare.seeds)
    for model in config.compare.models:
        for cell in cells:
            for seed in range(config.compare.seeds):
                cell_cfg = cell_config(config, overrides, experiment, model, cell, config.train.seed + seed)
                progress.step(f"{model} / {cell} / seed {cell_cfg.train.seed}")
                run_dir = training.train(cell_cfg, experiment=f"compare:{cell}")
                keras.backend.clear_session()
                metrics = RunFolder(run_dir).metrics()
                row = {
                    "model": model,
                    "cell": cell,
                    "seed": cell_cfg.train.seed,
                    "run_id": run_dir.name,
                    "epochs": metrics["epochs_run"],
                }
                row.update({f"val@{level}": value["mean"] for level, value in metrics["validation"].items()})
                if "test" in metrics:
                    row.update(
                        {f"test@{level}": value["mean"] for level, value in metrics["test"]["noise_levels"].items()}
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def baseline_rows(config: Config) -> pd.DataFrame:
    """The scikit-learn baselines scored like the runs (same splits, noise levels and draws), one row each."""
    from pipeline.models import baselines

    data = load_training_data(config)
    fitted = baselines.fit_baselines(data.train_series, data.train_labels, len(data.classes), config.train.seed)
    rows = []
    for name, model in fitted.items():
        row: dict[str, object] = {
            "model": "baselines",
            "cell": name,
            "seed": config.train.seed,
            "run_id": "",
            "epochs": 0,
        }
        row.update({key: value for key, value in score_row(model, config, data).items() if key != "test file"})
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, select_level: float) -> pd.DataFrame:
    """Mean and std across seeds for every model, cell and score column, ranked within each model by
    validation accuracy at `select_level` (the competition's test noise): the test columns are
    reported beside the ranking, never used for it."""
    scores = [c for c in table.columns if c.startswith(("val@", "test@"))]
    grouped = table.groupby(["model", "cell"], sort=False)[scores]
    summary = grouped.mean().join(grouped.std(ddof=0).fillna(0.0), rsuffix="_std").reset_index()
    key = f"val@{select_level:g}"
    summary["rank"] = summary.groupby("model", sort=False)[key].rank(ascending=False, method="min").astype(int)
    order = summary["model"].map({model: index for index, model in enumerate(dict.fromkeys(summary["model"]))})
    return (
        summary.assign(order=order)
        .sort_values(["order", "rank"], kind="stable")
        .drop(columns="order")
        .reset_index(drop=True)
    )


def paired_against_first(table: pd.DataFrame, summary: pd.DataFrame, select_level: float) -> pd.DataFrame:
    """Every cell against its model's first-ranked cell, paired seed by seed at `select_level`
    (pipeline.stages.cv_compare's t-test with no overlap term: the cells share one validation split,
    so the seeds vary the training only, and a verdict says nothing about other subjects). A model
    with one seed, or cells without common seeds, gets no paired row."""
    from pipeline.stages.cv_compare import paired_comparison

    key = f"val@{select_level:g}"
    rows = []
    for model, ranked in summary.groupby("model", sort=False):
        if model == "baselines":
            continue
        scores = table[table["model"] == model].pivot_table(index="seed", columns="cell", values=key)
        first = ranked.iloc[0]["cell"]
        for cell in ranked["cell"].iloc[1:]:
            both = scores[[first, cell]].dropna()
            if len(both) < 2:
                continue
            result = paired_comparison(both[cell].to_numpy(), both[first].to_numpy(), 0.0)
            rows.append(
                {
                    "model": model,
                    "cell": cell,
                    "against": first,
                    "seeds": len(both),
                    "mean difference": result.mean,
                    "95% low": result.low,
                    "95% high": result.high,
                    "verdict": result.verdict_naming("cell", first),
                }
            )
    return pd.DataFrame(rows)


def figure_for(summary: pd.DataFrame, prefix: str, title: str) -> Any:
    """The bars of each model's cells at each noise level: accuracy from 0 (a bar's length is its
    value, so no axis cut exaggerates a difference), the legend beside the axes, never over a bar."""
    from matplotlib.figure import Figure

    levels = [c for c in summary.columns if c.startswith(prefix) and not c.endswith("_std")]
    models = list(dict.fromkeys(summary["model"]))
    figure = Figure(figsize=(13, 4.2 * len(models)), dpi=110, layout="constrained")
    axes = figure.subplots(len(models), 1, squeeze=False)
    for axis, model in zip(axes[:, 0], models):
        rows = summary[summary["model"] == model]
        positions = np.arange(len(rows))
        width = 0.8 / len(levels)
        for index, level in enumerate(levels):
            axis.bar(
                positions + (index - (len(levels) - 1) / 2) * width,
                rows[level],
                width,
                yerr=rows[f"{level}_std"],
                capsize=2,
                label=f"test noise {level.split('@')[1]}",
            )
        axis.set_xticks(positions, rows["cell"], rotation=35, ha="right")
        axis.set_ylim(0.0, 1.0)
        axis.set_yticks(np.linspace(0, 1, 11))
        axis.set_ylabel("accuracy (mean over seeds)")
        axis.set_title(f"{model}: {title}")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return figure


def plot(path: Path, summary: pd.DataFrame, prefix: str, title: str) -> None:
    figure_for(summary, prefix, title).savefig(path, format="png")


def compare(config: Config, experiment: str | None, overrides: list[str]) -> Path:
    table = run_grid(config, experiment, overrides)
    if table.empty:
        raise DataError("the comparison grid is empty: check compare.models and compare.cells")
    table = pd.concat([table, baseline_rows(config)], ignore_index=True)
    select_level = config.data.test_noise
    summary = summarize(table, select_level)
    folder = config.path("reports", "compare", config.data.competition)
    reported = [c for c in summary.columns if c.startswith("test@") and not c.endswith("_std")]
    shown = summary[["model", "rank", "cell", *[c for c in summary.columns if c.startswith("val@")], *reported]]
    text = (
        f"# Regularizer comparison: {config.data.competition}\n\n"
        f"{len(table)} runs: models {', '.join(config.compare.models)}, {config.compare.seeds} seed(s) per cell, "
        f"{config.train.epochs} epochs at most. Cells are ranked within each model by validation accuracy at the competition's "
        f"test noise (`val@{select_level:g}`, mean over seeds; `_std` = spread across seeds). "
        + (
            "The organizer-side test accuracy (`test@x`) is reported for every cell and never used to rank.\n\n"
            if reported
            else "\n\n"
        )
        + f"{shown.to_markdown(index=False, floatfmt='.3f')}\n"
    )
    paired = paired_against_first(table, summary, select_level)
    text += (
        (
            f"\n## Each cell against its model's first, paired seed by seed (`val@{select_level:g}`)\n\n"
            'Differences of the same seeds, their mean and 95% interval (paired t-test); "not separated" when the '
            "interval holds zero. The cells share one validation split, so this measures the seeds' spread, not the "
            "subjects': `make cv-compare` compares two configurations over subject folds.\n\n"
            f"{paired.to_markdown(index=False, floatfmt='+.4f')}\n"
        )
        if not paired.empty
        else "\nOne seed per cell: no paired comparison (`compare.seeds` >= 2 gives one).\n"
    )
    # The three files of one comparison appear together.
    with atomic_files(folder / "compare.csv", folder / "compare.png", folder / "summary.md") as (
        csv_path,
        png_path,
        summary_path,
    ):
        table.to_csv(csv_path, index=False)
        plot(png_path, summary, "val@", "validation accuracy (the ranking key) at each test-noise level")
        summary_path.write_text(text)
    print(text)
    log.info(f"wrote {folder}/compare.csv, summary.md, compare.png")
    row = {
        "name": f"regularizers on {config.data.competition}",
        "runs": len(table),
        "params": {
            "models": ",".join(config.compare.models),
            "seeds": config.compare.seeds,
            "epochs": config.train.epochs,
        },
    }
    tracking.mirror_table(
        config, "compare", [row], [folder / name for name in ("summary.md", "compare.png", "compare.csv")]
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("pipeline.studies.compare", __doc__, default_experiment="experiments/compare.toml").parse_args(
        argv
    )
    return run_stage(lambda config: compare(config, args.exp, overrides(args)), args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
