"""`make evaluate [RUN=<run_id>]`: a trained run -> reports/<run_id>/ with figures and report.md.

  predictions.csv          the run's predictions on the scored series (ids, truth, prediction, probabilities)
  confusion_matrix.png     counts and row-normalized, activity names on the axes
  per_class.csv            precision, recall, F1 and support per activity
  learning_curves.png      loss and accuracy per epoch: train, validation clean and noisy
  noise_curve.png          accuracy against test noise 0..1.5 std, several noise draws (spread shown),
                           with the scikit-learn baselines on the same series and noise
  attention_maps.png       attention models: signals with the attention weight over time, per activity
  gradient_through_time.png  recurrent models: |d loss / d x_t| per time step: how far back BPTT reaches
  evaluation.json, report.md  the numbers and a page that ties the figures together

For an emulated competition the scored series are the test series (the competition's own noisy
file for the confusion matrix; the clean series plus fresh noise for the curve); otherwise the
validation series. Without RUN, the best run of the competition (by validation score). A report
whose run files and data are unchanged (the key in evaluation.json) is not made again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config, load_config
from pipeline.data.datasets import (
    CLEAN_TEST,
    DATACARD,
    SOLUTION,
    TrainingData,
    check_run_data,
    competition_folder,
    load_training_data,
    noisy_scored_series,
    organizer_side,
)
from pipeline.data.scoring import noise_draws, predicted_classes
from pipeline.data.signals import ACTIVITY_NAMES
from pipeline.errors import DataError
from pipeline.files import atomic_folder, sha256_file, write_json_atomic
from pipeline.log import log
from pipeline.runs import tracking
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import finished_run, resolve_runs, run_config

NOISE_LEVELS = tuple(np.round(np.arange(0.0, 1.51, 0.25), 2))
NOISE_SEEDS = 3
CURVE_SEED = 99  # + train.seed: the curve's draws are the ones train's host-side test scores use


@dataclass(frozen=True)
class Scored:
    """The series a report scores: noisy ones (as the participant sees them) and clean ones for the curve."""

    name: str
    ids: np.ndarray
    noisy: np.ndarray
    clean: np.ndarray
    labels: np.ndarray  # class indices
    noise_unit: np.ndarray  # the per-channel std a noise level is counted in


def scored_series(config: Config, data: TrainingData) -> Scored:
    host = organizer_side(config, data.competition, data.classes)
    if host is not None:
        with np.load(config.private_dir / config.data.competition / CLEAN_TEST) as archive:
            clean_ids = archive["id"].astype(str)
        if not np.array_equal(clean_ids, data.competition.test.ids):
            raise DataError(
                f"{config.private_dir / config.data.competition}: clean test ids differ from the participant's test ids"
            )
        return Scored(
            "test",
            data.competition.test.ids,
            data.competition.test.series,
            host.clean_series,
            host.file_labels,
            host.noise_unit,
        )
    # No answer key here (a copied or Kaggle competition): the validation series (a fold run's
    # held-out fold, which chose nothing), under one noise draw of the test profile.
    return Scored(
        "validation",
        data.scored_ids,
        noisy_scored_series(config, data),
        data.scored_series,
        data.scored_labels,
        data.train_std,
    )


def gradient_through_time(model: Any, series: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean over series of the norm of d loss / d x_t at every time step t (how far back BPTT reaches)."""
    import keras

    from pipeline.models import input_gradients

    gradient = input_gradients(model, series.astype(np.float32), keras.utils.to_categorical(labels, num_classes))
    return np.linalg.norm(gradient, axis=-1).mean(0)


# ---- figures ---------------------------------------------------------------------------------------


def _figure(path: Path, draw: Any, size: tuple[float, float] = (7, 5)) -> None:
    """Draw on a standalone Figure (no pyplot: no global backend switch, safe inside notebooks)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=110)
    draw(figure)
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_confusion(path: Path, truth: np.ndarray, predicted: np.ndarray, names: list[str], title: str) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(truth, predicted, labels=range(len(names)))
    normalized = counts / np.maximum(counts.sum(1, keepdims=True), 1)

    def draw(figure: Any) -> None:
        for index, (matrix, label) in enumerate(((counts, "series"), (normalized, "fraction of the true activity"))):
            axis = figure.add_subplot(1, 2, index + 1)
            image = axis.imshow(matrix, cmap="Blues")
            for (row, column), value in np.ndenumerate(matrix):
                text = f"{value:d}" if matrix is counts else f"{value:.2f}"
                axis.text(
                    column,
                    row,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > matrix.max() / 2 else "black",
                )
            axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
            axis.set_yticks(range(len(names)), names, fontsize=7)
            axis.set_xlabel("predicted activity")
            axis.set_ylabel("true activity")
            axis.set_title(("counts" if matrix is counts else "row-normalized") + f"\n{title}", fontsize=9)
            figure.colorbar(image, ax=axis, fraction=0.046, label=label)

    _figure(path, draw, (12, 5.5))
    return counts


def plot_learning_curves(path: Path, history: pd.DataFrame, title: str) -> None:
    def draw(figure: Any) -> None:
        loss, accuracy = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
        epochs = history["epoch"] + 1
        loss.plot(epochs, history["loss"], label="train")
        if "val_loss" in history:
            loss.plot(epochs, history["val_loss"], label="validation (selection set)")
        loss.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"loss\n{title}")
        accuracy.plot(epochs, history["accuracy"], label="train (with its augmentation)")
        accuracy.plot(epochs, history["val_clean_accuracy"], label="validation, clean")
        accuracy.plot(epochs, history["val_noisy_accuracy"], label="validation, test noise")
        accuracy.set(xlabel="epoch", ylabel="accuracy", title=f"accuracy\n{title}")
        for axis in (loss, accuracy):
            axis.legend(fontsize=8)
            axis.grid(alpha=0.3)

    _figure(path, draw, (11, 4.5))


def plot_noise_curve(path: Path, curve: pd.DataFrame, title: str, test_level: float) -> None:
    def draw(figure: Any) -> None:
        axis = figure.add_subplot(1, 1, 1)
        summary = curve.groupby(["predictor", "level"])["accuracy"].agg(["mean", "std", "min", "max"]).reset_index()
        for name, rows in summary.groupby("predictor", sort=False):
            axis.plot(rows["level"], rows["mean"], marker="o", label=name)
            axis.fill_between(rows["level"], rows["min"], rows["max"], alpha=0.2)
        axis.axvline(test_level, color="gray", linestyle="--", label=f"competition's test noise ({test_level:g})")
        axis.set(
            xlabel="test noise (std of Gaussian noise, in units of each feature's clean std)",
            ylabel="accuracy",
            title=f"accuracy against test noise (band: min-max over {NOISE_SEEDS} draws)\n{title}",
        )
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)

    _figure(path, draw, (8, 5))


def plot_attention(
    path: Path,
    series: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    channels: list[str],
    per_class: int = 2,
) -> None:
    classes = sorted(set(labels.tolist()))

    def draw(figure: Any) -> None:
        rows = len(classes)
        for row, label in enumerate(classes):
            picks = np.flatnonzero(labels == label)[:per_class]
            for column, index in enumerate(picks):
                axis = figure.add_subplot(rows, per_class, row * per_class + column + 1)
                signal = (series[index] - series[index].mean(0)) / (series[index].std(0) + 1e-9)
                steps = np.arange(len(signal))
                for channel in range(min(3, signal.shape[1])):
                    axis.plot(steps, signal[:, channel], linewidth=0.8, label=channels[channel])
                twin = axis.twinx()
                twin.fill_between(steps, 0, weights[index], color="crimson", alpha=0.25, step="mid", label="attention")
                twin.set_ylim(0, max(weights[index].max() * 1.2, 1e-6))
                twin.set_ylabel("attention weight", fontsize=7, color="crimson")
                axis.set_title(f"{names[label]} (series {index})", fontsize=8)
                axis.set_xlabel("time step", fontsize=7)
                axis.set_ylabel("standardized signal", fontsize=7)
                if row == 0 and column == 0:
                    axis.legend(fontsize=6, loc="upper left")

    _figure(path, draw, (10, 2.2 * len(classes)))


def plot_gradient(path: Path, norms: np.ndarray, title: str) -> None:
    def draw(figure: Any) -> None:
        axis = figure.add_subplot(1, 1, 1)
        axis.semilogy(np.arange(1, len(norms) + 1), norms, marker="o" if len(norms) < 30 else None)
        axis.set(
            xlabel="input time step t",
            ylabel="mean |d loss / d x_t| (log scale)",
            title=f"gradient through time: how far back BPTT reaches\n{title}",
        )
        axis.grid(alpha=0.3, which="both")

    _figure(path, draw, (8, 4.5))


# ---- the stage ---------------------------------------------------------------------------------------


def evaluation_key(trained_with: Config, run_dir: Path) -> str:
    """What a report depends on: the run's files and the competition's data (participant and organizer side)."""
    digest = hashlib.sha256()
    run = RunFolder(run_dir)
    inputs = [path for path in (run.model_file, run.metrics_file, run.history_file, run.config_file) if path.is_file()]
    for folder in (competition_folder(trained_with), trained_with.private_dir / trained_with.data.competition):
        inputs += [folder / name for name in (DATACARD, SOLUTION, CLEAN_TEST) if (folder / name).is_file()]
    for path in inputs:
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


def evaluate(config: Config, run_id: str) -> Path:
    """Write the report of a run (the best run of the competition without RUN): compute, plot, write."""
    run = RunFolder(finished_run(config, chosen_run(config, run_id)))
    trained_with = run_config(config, run.path)
    target = config.path("reports", run.name)
    key = evaluation_key(trained_with, run.path)
    if is_current(target, key):
        log.info(f"{target}/report.md: up to date with the run and the data (remove the folder to write it again)")
        return target
    computed = compute(run, trained_with)
    with atomic_folder(target) as folder:
        figures = plot(folder, computed, trained_with)
        evaluation = write(folder, computed, trained_with, figures, key)
    print(
        f"wrote {target}/report.md: accuracy {evaluation['accuracy']:.4f} on the {computed.scored.name} series "
        f"(baselines: {', '.join(f'{k} {v:.4f}' for k, v in computed.baseline_accuracy.items())}); figures: {', '.join(figures)}"
    )
    tracking.add_artifacts(
        config, run.path, [target / "report.md", target / "evaluation.json", *(target / f for f in figures)]
    )
    return target


def chosen_run(config: Config, run_id: str) -> str:
    """RUN as given, or the best run; a cross-validation stands for its first fold run."""
    resolved = resolve_runs(config, [run_id] if run_id else [])
    if len(resolved) > 1:  # a cross-validation: its folds are separate models
        log.info(
            f"{run_id or 'the chosen run'} is a cross-validation of {len(resolved)} fold "
            f"runs: evaluating the first, {resolved[0]} (RUN=<fold run id> for another)",
        )
    return resolved[0]


def is_current(target: Path, key: str) -> bool:
    evaluation = target / "evaluation.json"
    return (
        (target / "report.md").is_file()
        and evaluation.is_file()
        and json.loads(evaluation.read_text()).get("key") == key
    )


@dataclass(frozen=True)
class Computed:
    """Everything a report shows, computed before anything is drawn or written."""

    run_id: str
    lineage: Lineage
    model: Any
    scored: Scored
    names: list[str]  # the activities' names, in class order
    probabilities: np.ndarray
    per_class: pd.DataFrame
    curve: pd.DataFrame  # accuracy of the run and the baselines by noise level and draw
    baseline_accuracy: dict[str, float]
    history: pd.DataFrame | None  # an ensemble run (make ensemble) has no training history of its own

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(-1)


def compute(run: RunFolder, trained_with: Config) -> Computed:
    from sklearn.metrics import precision_recall_fscore_support

    from pipeline.models import baselines

    lineage = run.lineage()
    data = load_training_data(trained_with)
    check_run_data(trained_with, run.name, lineage.data_inputs)
    model = run.load_model()
    scored = scored_series(trained_with, data)
    classes = lineage.classes
    names = [ACTIVITY_NAMES.get(c, str(c)) for c in classes]
    probabilities = model.predict(scored.noisy, batch_size=1024, verbose=0)  # kept whole: they go into predictions.csv
    precision, recall, f1, support = precision_recall_fscore_support(
        scored.labels, probabilities.argmax(-1), labels=range(len(classes)), zero_division=0
    )
    per_class = pd.DataFrame(
        {"activity": names, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    fitted = baselines.fit_baselines(data.train_series, data.train_labels, len(classes), trained_with.train.seed)
    curve = noise_draws(
        {(lineage.model if lineage.kind == "blend" else trained_with.model.name): model, **fitted},
        scored.clean,
        scored.labels,
        NOISE_LEVELS,
        NOISE_SEEDS,
        trained_with.data.noise_profile,
        scored.noise_unit,
        trained_with.train.seed + CURVE_SEED,
        progress=True,
    )
    baseline_accuracy = {
        name: float((predicted_classes(b, scored.noisy) == scored.labels).mean()) for name, b in fitted.items()
    }
    history = run.history() if run.history_file.is_file() else None
    return Computed(
        run.name, lineage, model, scored, names, probabilities, per_class, curve, baseline_accuracy, history
    )


def plot(folder: Path, computed: Computed, trained_with: Config) -> list[str]:
    """Draw the report's figures into `folder`; their file names."""
    from pipeline import models

    scored, model, title = computed.scored, computed.model, f"{computed.run_id} on {computed.scored.name}"
    plot_confusion(folder / "confusion_matrix.png", scored.labels, computed.predicted, computed.names, title)
    figures = ["confusion_matrix.png"]
    if computed.history is not None:
        plot_learning_curves(folder / "learning_curves.png", computed.history, computed.run_id)
        figures.append("learning_curves.png")
    plot_noise_curve(folder / "noise_curve.png", computed.curve, title, trained_with.data.test_noise)
    figures.append("noise_curve.png")
    keras_model = hasattr(model, "layers")  # a blend's fold run (make blend) is not: no attention or gradient figure
    if keras_model and "attention" in [layer.name for layer in model.layers]:
        weights = np.asarray(models.attention_model(model)(scored.noisy[:2000]))
        plot_attention(
            folder / "attention_maps.png",
            scored.noisy[:2000],
            weights,
            scored.labels[:2000],
            computed.names,
            computed.lineage.channels,
        )
        figures.append("attention_maps.png")
    if keras_model and models.recurrent_layers(model):
        sample = slice(0, min(512, len(scored.labels)))
        norms = gradient_through_time(model, scored.noisy[sample], scored.labels[sample], len(computed.names))
        plot_gradient(folder / "gradient_through_time.png", norms, title)
        figures.append("gradient_through_time.png")
    return figures


def write(folder: Path, computed: Computed, trained_with: Config, figures: list[str], key: str) -> dict[str, Any]:
    """The report's tables, evaluation.json and report.md; the evaluation."""
    from sklearn.metrics import confusion_matrix

    scored, classes = computed.scored, np.array(computed.lineage.classes)
    table = pd.DataFrame(
        {"file": scored.ids, "true_activity": classes[scored.labels], "predicted_activity": classes[computed.predicted]}
    )
    table = pd.concat([table, pd.DataFrame(computed.probabilities, columns=[f"p_{c}" for c in classes])], axis=1)
    table.to_csv(folder / "predictions.csv", index=False, float_format="%.6f")
    computed.per_class.to_csv(folder / "per_class.csv", index=False)
    computed.curve.to_csv(folder / "noise_curve.csv", index=False)
    summary_curve = computed.curve.groupby(["predictor", "level"])["accuracy"].agg(["mean", "std"]).reset_index()
    evaluation = {
        "run_id": computed.run_id,
        "scored": scored.name,
        "accuracy": float((computed.predicted == scored.labels).mean()),
        "baseline_accuracy": computed.baseline_accuracy,
        "per_class": computed.per_class.to_dict(orient="records"),
        "confusion_matrix": confusion_matrix(scored.labels, computed.predicted, labels=range(len(classes))).tolist(),
        "noise_curve": summary_curve.to_dict(orient="records"),
        "figures": figures,
        "key": key,
    }
    write_json_atomic(folder / "evaluation.json", evaluation)
    report = report_markdown(evaluation, computed.lineage, trained_with, computed.per_class, summary_curve)
    (folder / "report.md").write_text(report)
    return evaluation


def report_markdown(
    evaluation: dict, lineage: Lineage, config: Config, per_class: pd.DataFrame, curve: pd.DataFrame
) -> str:
    wide = curve.pivot(index="predictor", columns="level", values="mean")
    wide.columns = [f"noise {c:g}" for c in wide.columns]
    settings = {
        f"{section}.{key}": value
        for section in ("model", "regularization", "augment")
        for key, value in getattr(config, section).__dict__.items()
    }
    defaults = {
        f"{section}.{key}": value
        for section in ("model", "regularization", "augment")
        for key, value in getattr(load_config(), section).__dict__.items()
    }
    changed = {key: value for key, value in settings.items() if value != defaults[key]}
    lines = [
        f"# Report: {evaluation['run_id']}",
        "",
        f"Model `{lineage.model}`, regularizers `{lineage.regularizer}`, competition `{lineage.competition}`, {lineage.parameters or 0:,} parameters.",
        f"Settings that differ from the defaults: {', '.join(f'`{k}={v}`' for k, v in changed.items()) or 'none'}.",
        "",
        f"Accuracy on the {evaluation['scored']} series as the participant sees them: **{evaluation['accuracy']:.4f}**"
        f" (baselines on the same series: {', '.join(f'{k} {v:.4f}' for k, v in evaluation['baseline_accuracy'].items())}).",
        "",
        "## Per activity",
        "",
        per_class.to_markdown(index=False, floatfmt=".3f"),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        f"## Accuracy against test noise (mean of {NOISE_SEEDS} draws)",
        "",
        wide.to_markdown(floatfmt=".3f"),
        "",
        "![noise curve](noise_curve.png)",
        "",
    ]
    if "learning_curves.png" in evaluation["figures"]:
        lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    if "attention_maps.png" in evaluation["figures"]:
        lines += ["## Where the model attends", "", "![attention maps](attention_maps.png)", ""]
    if "gradient_through_time.png" in evaluation["figures"]:
        lines += [
            "## Gradient through time",
            "",
            "How strongly the loss depends on each input step: a fast fall-off means BPTT's gradient vanishes before it reaches early steps.",
            "",
            "![gradient through time](gradient_through_time.png)",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.evaluate", __doc__)
    parser.add_argument(
        "--run",
        default="",
        help="run id; 'experiment' = the run of --exp/--set (default: the best run of the competition)",
    )
    args = parser.parse_args(argv)
    return run_stage(lambda config: evaluate(config, args.run), args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
