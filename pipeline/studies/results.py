"""`make results`: one results page drawn from what is on disk, with its figures; no number typed by hand.

It reads the reports and studies the other targets wrote and draws, into docs/results/ beside the
page docs/results.md (committed: the page readers see, redrawn by `make results` after new runs):

- per competition with a peers table (`make peers`: reports/peers/<competition>/peers.csv):
  `noise_<competition>.png`, accuracy on the test subjects against the test noise for every peer
  (dashed: with noised copies) and the competition's best recurrent run (bold), the competition's
  noise marked; `confusion_<competition>.png`, the best run's confusion matrix on the competition's
  test file (`make evaluate`'s evaluation.json) beside the strongest peer's (`make peers`'
  confusion.json), the strongest peer being the one with the best validation score at the
  competition's noise, so chosen on validation, never on the test columns shown;
- for every paired comparison made (`make cv-compare`: reports/cv_compare/*/comparison.json):
  `paired.png`, a forest plot of each mean fold difference A - B with its 95% interval (grey where
  the interval holds zero: "not separated"), and `folds.png`, each comparison's fold scores, A
  against B, one point per fold run, the diagonal where they would be equal;
- every cross-validation in runs/ (`make cv`; the tuner's trials are in their study's section): its
  CV selection score, spread, fold runs and protocol;
- for every tuning study on disk (`make tune`'s runs/tune/<study>.db): its trials as stored, and
  Optuna's optimization history and parameter importances (`tune_<study>_history.png`,
  `tune_<study>_importances.png`);
- docs/results.md, the page: the tables those figures come from, every number printed as the file
  holds it (tests/test_results.py reads each one back from its file).

The test columns are reports of what was chosen on validation, never choices.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.errors import DataError
from pipeline.files import atomic_file, atomic_folder
from pipeline.log import log
from pipeline.runs.folder import Lineage, RunFolder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURES = "results"  # docs/results/: the page's figures, beside docs/results.md
RECURRENT = "recurrent: "  # how make peers names the competition's best run in its table


def peer_tables(config: Config) -> dict[str, pd.DataFrame]:
    """competition -> its peers.csv, for every competition `make peers` ran on."""
    folder = config.path("reports", "peers")
    return {
        path.parent.name: pd.read_csv(path, dtype={"noised copies": "Int64"})  # the recurrent row has none
        for path in sorted(folder.glob("*/peers.csv"))
    }


def comparisons(config: Config) -> list[dict[str, Any]]:
    """Every comparison.json of `make cv-compare`, in name order."""
    folder = config.path("reports", "cv_compare")
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*/comparison.json"))]


def label(row: pd.Series) -> str:
    copies = row["noised copies"]
    if str(row["peer"]).startswith(RECURRENT):
        return str(row["peer"])
    if pd.isna(copies) or not copies:
        return str(row["peer"])
    return f"{row['peer']} + {int(copies)} noised cop{'y' if int(copies) == 1 else 'ies'}"


def levels_of(table: pd.DataFrame, prefix: str) -> list[str]:
    return sorted((c for c in table.columns if c.startswith(prefix)), key=lambda c: float(c.split("@")[1]))


def noise_figure(competition: str, table: pd.DataFrame, test_noise: float) -> Figure:
    """Accuracy on the test subjects against the test noise, one line per row of a peers table."""
    from matplotlib.figure import Figure

    columns = levels_of(table, "test@")
    levels = [float(c.split("@")[1]) for c in columns]
    figure = Figure(figsize=(10, 5), dpi=110, layout="constrained")
    axis = figure.subplots()
    names = list(dict.fromkeys(str(peer) for peer in table["peer"]))  # one colour per peer, solid and dashed alike
    for _, row in table.iterrows():
        recurrent = str(row["peer"]).startswith(RECURRENT)
        axis.plot(
            levels,
            row[columns].to_numpy(dtype=float),
            marker="o",
            linewidth=3 if recurrent else 1.4,
            linestyle="--" if not recurrent and not pd.isna(row["noised copies"]) and row["noised copies"] else "-",
            color="black" if recurrent else f"C{names.index(str(row['peer'])) % 10}",
            label=label(row),
        )
    axis.axvline(test_noise, color="grey", linestyle=":", label=f"the competition's noise ({test_noise:g})")
    axis.set(
        xlabel="test noise (x the clean-train std of each channel)",
        ylabel="accuracy on the test subjects (mean of the draws)",
        title=f"{competition}: accuracy against test noise (reports, never used to choose)",
        ylim=(0, 1),
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return figure


def strongest_peer(table: pd.DataFrame, test_noise: float) -> pd.Series:
    """The peer (and training set) with the best validation score at the competition's noise."""
    column = f"val@{test_noise:g}"
    peers = table[~table["peer"].astype(str).str.startswith(RECURRENT)]
    return peers.loc[peers[column].astype(float).idxmax()]


def confusion_figure(competition: str, panels: list[tuple[str, np.ndarray]], classes: list[Any]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * len(panels), 5), dpi=110, layout="constrained")
    for axis, (title, counts) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (row, column), value in np.ndenumerate(counts):
            axis.text(column, row, str(value), ha="center", va="center", fontsize=8)
        axis.set_xticks(range(len(classes)), classes)
        axis.set_yticks(range(len(classes)), classes)
        axis.set(xlabel="predicted", ylabel="true", title=f"{title}\naccuracy {np.trace(counts) / counts.sum():.4f}")
    figure.suptitle(f"{competition}: confusion on the competition's test file")
    return figure


def paired_figure(records: list[dict[str, Any]]) -> Figure:
    """A forest plot: each comparison's mean fold difference and its 95% interval."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 0.55 * len(records) + 1.6), dpi=110, layout="constrained")
    axis = figure.subplots()
    for index, record in enumerate(reversed(records)):
        low, high = record["low"], record["high"]
        separated = low is not None and high is not None and (low > 0 or high < 0)
        color = "tab:blue" if separated else "grey"
        if low is not None and high is not None:
            axis.plot([low, high], [index, index], color=color, linewidth=2)
        axis.plot(record["mean"], index, "o", color=color)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(records)), [f"{r['a']}  -  {r['b']}" for r in reversed(records)], fontsize=7)
    axis.set(
        xlabel="mean fold difference A - B, with its 95% interval (grey: not separated)",
        title="every paired comparison (make cv-compare)",
    )
    axis.grid(axis="x", alpha=0.3)
    return figure


def folds_figure(records: list[dict[str, Any]]) -> Figure:
    """Each comparison's fold scores, A against B."""
    from matplotlib.figure import Figure

    columns = min(3, len(records))
    rows = -(-len(records) // columns)
    figure = Figure(figsize=(4.2 * columns, 4 * rows), dpi=110, layout="constrained")
    for axis, record in zip(figure.subplots(rows, columns, squeeze=False).ravel(), records):
        a, b = np.asarray(record["a_scores"]), np.asarray(record["b_scores"])
        low, high = float(min(a.min(), b.min())) - 0.01, float(max(a.max(), b.max())) + 0.01
        axis.plot([low, high], [low, high], color="grey", linewidth=0.8)
        axis.scatter(b, a, s=18)
        axis.set(xlim=(low, high), ylim=(low, high), xlabel=record["b"], ylabel=record["a"])
        axis.xaxis.label.set_fontsize(6)
        axis.yaxis.label.set_fontsize(6)
        axis.set_title(f"{record['verdict']}: {sum(a > b)} of {len(a)} folds above the diagonal", fontsize=8)
    for axis in figure.axes[len(records) :]:
        axis.set_visible(False)
    return figure


def number(value: Any) -> str:
    """A table cell as the file holds it (peers.csv is written with 4 decimals)."""
    return "" if value is None or (np.isscalar(value) and pd.isna(value)) or value is pd.NA else f"{value}"


def shown(value: Any) -> Any:
    """A stored float to 4 significant digits (a study keeps full precision); anything else as it is."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(":--" if index == 0 else "--:" for index in range(len(header))) + "|",
        *("| " + " | ".join(number(value) for value in row) + " |" for row in rows),
    ]


def confusion_panels(
    config: Config, competition: str, table: pd.DataFrame
) -> tuple[list[tuple[str, np.ndarray]], list[Any]] | None:
    """The best run's confusion on the test file (make evaluate) beside the strongest peer's (make peers),
    or None when either report is missing."""
    confusion = config.path("reports", "peers", competition, "confusion.json")
    recurrent = table[table["peer"].astype(str).str.startswith(RECURRENT)]
    if not len(recurrent) or not confusion.is_file():
        return None
    run_id = str(recurrent["peer"].iloc[0]).removeprefix(RECURRENT)
    evaluation = config.path("reports", run_id, "evaluation.json")
    if not evaluation.is_file():
        return None
    peers = json.loads(confusion.read_text())
    strongest = strongest_peer(table, config.data.test_noise)
    entry = next(
        item
        for item in peers["peers"]
        if item["peer"] == strongest["peer"] and item["noised copies"] == int(strongest["noised copies"])
    )
    panels = [
        (run_id, np.array(json.loads(evaluation.read_text())["confusion_matrix"])),
        (label(strongest), np.array(entry["counts"])),
    ]
    return panels, peers["classes"]


def save(figure: Figure, path: Path) -> str:
    """Write a figure as PNG; returns the page's link to it (relative to the page)."""
    figure.savefig(path, format="png")
    return f"{FIGURES}/{path.name}"


def competition_section(folder: Path, config: Config, competition: str, table: pd.DataFrame) -> list[str]:
    test_noise = config.data.test_noise
    noise = save(noise_figure(competition, table, test_noise), folder / f"noise_{competition}.png")
    figures = [f"![{competition}: accuracy against test noise]({noise})"]
    header = [
        "peer",
        "noised copies",
        "fit seconds",
        "fit peak GiB",
        *levels_of(table, "val@"),
        *levels_of(table, "test@"),
        "test file",
    ]
    shown = [column for column in header if column in table.columns]
    lines = [f"## {competition}", "", f"From reports/peers/{competition}/peers.csv (`make peers`):", ""]
    lines += markdown_table(shown, table[shown].astype(object).where(table[shown].notna(), None).values.tolist())
    confusions = confusion_panels(config, competition, table)
    if confusions is not None:
        link = save(confusion_figure(competition, *confusions), folder / f"confusion_{competition}.png")
        figures.append(f"![{competition}: confusion matrices]({link})")
        lines += [
            "",
            f"The strongest peer, chosen on validation at the competition's noise (val@{test_noise:g}): "
            f"{label(strongest_peer(table, test_noise))}.",
        ]
    return [*lines, "", *(line for figure in figures for line in (figure, ""))]


def comparison_section(folder: Path, records: list[dict[str, Any]]) -> list[str]:
    paired = save(paired_figure(records), folder / "paired.png")
    folds = save(folds_figure(records), folder / "folds.png")
    rows = [
        [
            record["a"],
            record["b"],
            len(record["differences"]),
            *(None if record[key] is None else round(record[key], 4) for key in ("mean", "low", "high")),
            record["verdict"],
        ]
        for record in records
    ]
    return [
        "## Paired comparisons",
        "",
        "From reports/cv_compare/*/comparison.json (`make cv-compare`): the mean fold difference A - B and its 95% "
        "interval (corrected resampled t-test; to 4 decimals); an interval that holds zero is not separated.",
        "",
        *markdown_table(["A", "B", "fold runs", "mean A - B", "low", "high", "verdict"], rows),
        "",
        f"![every paired comparison]({paired})",
        "",
        f"![fold scores, A against B]({folds})",
        "",
    ]


def cross_validations(config: Config) -> list[tuple[Lineage, dict[str, Any]]]:
    """Every finished CV entry in runs/ (`make cv`, `make ensemble RUN="cv:A cv:B"`) with its
    selection, the tuner's trials left out (their study's section has them)."""
    folder = config.path("runs")
    entries = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        run = RunFolder(path)
        lineage = run.lineage_or_none() if path.is_dir() else None
        if lineage is None or lineage.kind != "cv" or lineage.experiment.startswith("tune:") or not run.finished:
            continue
        entries.append((lineage, run.metrics()["selection"]))
    return entries


def cv_section(entries: list[tuple[Lineage, dict[str, Any]]]) -> list[str]:
    rows = [
        [
            lineage.run_id,
            lineage.experiment,
            len(selection["folds"]),
            selection["definition"].get("protocol", "").split(":")[0],
            round(selection["score"], 4),
            round(selection["std"], 4),
        ]
        for lineage, selection in entries
    ]
    return [
        "## Cross-validations",
        "",
        "From each CV entry in runs/ (`make cv`): the CV selection score, the mean over the fold runs of the "
        "held-out folds' accuracy at the competition's noise, with its spread (to 4 decimals). Nested: each fold run "
        "chose on an inner fold of its training part and was scored once.",
        "",
        *markdown_table(["CV", "experiment", "fold runs", "protocol", "CV selection score", "std"], rows),
        "",
    ]


def studies(config: Config) -> list[Path]:
    """The tuner's SQLite studies on disk (`make tune`'s default storage: runs/tune/<study>.db)."""
    folder = config.path("runs", "tune")
    return sorted(folder.glob("*.db")) if folder.is_dir() else []


def tuning_section(folder: Path, path: Path) -> list[str]:
    """One study: its trials as stored, Optuna's optimization history and parameter importances."""
    import matplotlib

    matplotlib.use("Agg")  # Optuna's plots draw through pyplot; no window
    import optuna
    import optuna.visualization.matplotlib as optuna_plots
    from matplotlib import pyplot

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the matplotlib plots
    storage = f"sqlite:///{path}"
    name = path.stem
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    params = sorted({key for trial in trials for key in trial.params})
    complete = optuna.trial.TrialState.COMPLETE  # a pruned trial's value is the epoch score it was stopped at
    rows = [
        [
            trial.number,
            trial.state.name.lower(),
            shown(trial.value) if trial.state == complete else None,
            *(shown(trial.params.get(key)) for key in params),
        ]
        for trial in trials
    ]
    lines = [
        f"## Tuning study {name}",
        "",
        f"From {path.name} (`make tune`): every trial, its state, its CV selection score and its parameters (to 4 "
        "significant digits; the best score is optimistic: chosen on these very folds).",
        "",
        *markdown_table(["trial", "state", "CV selection score", *params], rows),
        "",
    ]
    completed = [trial for trial in trials if trial.state == complete]
    if not completed:
        return [*lines, "No trial completed yet: no history to draw.", ""]
    plots = [("history", optuna_plots.plot_optimization_history, "optimization history")]
    if len(completed) >= 2 and params:
        plots.append(("importances", optuna_plots.plot_param_importances, "parameter importances (fANOVA)"))
    for kind, plot, title in plots:
        axis = plot(study)
        link = save(axis.figure, folder / f"tune_{name}_{kind}.png")
        pyplot.close(axis.figure)
        lines += [f"![{name}: {title}]({link})", ""]
    if len(plots) == 1:
        lines += ["Fewer than two completed trials: no parameter importances.", ""]
    return lines


def results(config: Config) -> Path:
    """Write docs/results.md and its figures (docs/results/) from the reports and studies on disk."""
    tables, records, found = peer_tables(config), comparisons(config), studies(config)
    entries = cross_validations(config)
    if not tables and not records and not found and not entries:
        raise DataError(
            f"{config.path('reports')}: no peers tables, cross-validations, paired comparisons or tuning studies yet; "
            "`make peers`, `make cv`, `make cv-compare A=... B=...` and `make tune` write them"
        )
    page = config.root / "docs" / "results.md"
    with atomic_folder(page.with_suffix("")) as folder:
        lines = [
            "# Results",
            "",
            "[Back to the README](../README.md). Drawn by `make results` from the reports and studies on disk; every "
            "number is the file's, none typed by hand. Test columns are reports of what was chosen on validation, never "
            "choices. The measurements behind each choice, with their commands, are on [findings](findings.md).",
            "",
        ]
        for competition, table in tables.items():
            lines += competition_section(folder, config, competition, table)
        if entries:
            lines += cv_section(entries)
        if records:
            lines += comparison_section(folder, records)
        for path in found:
            lines += tuning_section(folder, path)
        drawn = len(list(folder.glob("*.png")))
        with atomic_file(page) as temp:
            temp.write_text("\n".join(lines))
    log.info(f"wrote {page} and {drawn} figures in {page.with_suffix('')}")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.results", __doc__)
    return run_stage(results, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
