"""`make results`: one results page drawn from what is on disk, with its figures; no number typed by hand.

It reads the reports the other targets wrote and draws, into reports/results/:

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
- results.md, the page: the tables those figures come from, every number printed as the file holds
  it (tests/test_results.py reads each one back from its file).

The test columns are reports of what was chosen on validation, never choices.
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
from pipeline.errors import DataError
from pipeline.files import atomic_folder
from pipeline.log import log

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


def plot_noise(path: Path, competition: str, table: pd.DataFrame, test_noise: float) -> None:
    from matplotlib.figure import Figure

    columns = levels_of(table, "test@")
    levels = [float(c.split("@")[1]) for c in columns]
    figure = Figure(figsize=(10, 5), dpi=110, layout="constrained")
    axis = figure.subplots()
    for _, row in table.iterrows():
        recurrent = str(row["peer"]).startswith(RECURRENT)
        axis.plot(
            levels,
            row[columns].to_numpy(dtype=float),
            marker="o",
            linewidth=3 if recurrent else 1.4,
            linestyle="--" if not recurrent and not pd.isna(row["noised copies"]) and row["noised copies"] else "-",
            color="black" if recurrent else None,
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
    figure.savefig(path, format="png")


def strongest_peer(table: pd.DataFrame, test_noise: float) -> pd.Series:
    """The peer (and training set) with the best validation score at the competition's noise."""
    column = f"val@{test_noise:g}"
    peers = table[~table["peer"].astype(str).str.startswith(RECURRENT)]
    return peers.loc[peers[column].astype(float).idxmax()]


def plot_confusions(path: Path, competition: str, panels: list[tuple[str, np.ndarray]], classes: list[Any]) -> None:
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
    figure.savefig(path, format="png")


def plot_paired(path: Path, records: list[dict[str, Any]]) -> None:
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
    figure.savefig(path, format="png")


def plot_folds(path: Path, records: list[dict[str, Any]]) -> None:
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
    figure.savefig(path, format="png")


def number(value: Any) -> str:
    """A table cell as the file holds it (peers.csv is written with 4 decimals)."""
    return "" if value is None or (np.isscalar(value) and pd.isna(value)) or value is pd.NA else f"{value}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(":--" if index == 0 else "--:" for index in range(len(header))) + "|",
        *("| " + " | ".join(number(value) for value in row) + " |" for row in rows),
    ]


def competition_section(folder: Path, config: Config, competition: str, table: pd.DataFrame) -> list[str]:
    test_noise = config.data.test_noise
    plot_noise(folder / f"noise_{competition}.png", competition, table, test_noise)
    figures = [f"![{competition}: accuracy against test noise](noise_{competition}.png)"]
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
    confusion = config.path("reports", "peers", competition, "confusion.json")
    recurrent = table[table["peer"].astype(str).str.startswith(RECURRENT)]
    evaluation = (
        config.path("reports", str(recurrent["peer"].iloc[0]).removeprefix(RECURRENT), "evaluation.json")
        if len(recurrent)
        else None
    )
    if confusion.is_file() and evaluation is not None and evaluation.is_file():
        peers = json.loads(confusion.read_text())
        strongest = strongest_peer(table, test_noise)
        entry = next(
            item
            for item in peers["peers"]
            if item["peer"] == strongest["peer"] and item["noised copies"] == int(strongest["noised copies"])
        )
        run_id = str(recurrent["peer"].iloc[0]).removeprefix(RECURRENT)
        panels = [
            (run_id, np.array(json.loads(evaluation.read_text())["confusion_matrix"])),
            (label(strongest), np.array(entry["counts"])),
        ]
        plot_confusions(folder / f"confusion_{competition}.png", competition, panels, peers["classes"])
        figures.append(f"![{competition}: confusion matrices](confusion_{competition}.png)")
        lines += [
            "",
            f"The strongest peer, chosen on validation at the competition's noise (val@{test_noise:g}): "
            f"{label(strongest)}.",
        ]
    return [*lines, "", *(line for figure in figures for line in (figure, ""))]


def comparison_section(folder: Path, records: list[dict[str, Any]]) -> list[str]:
    plot_paired(folder / "paired.png", records)
    plot_folds(folder / "folds.png", records)
    rows = [
        [
            record["a"],
            record["b"],
            len(record["differences"]),
            record["mean"],
            record["low"],
            record["high"],
            record["verdict"],
        ]
        for record in records
    ]
    return [
        "## Paired comparisons",
        "",
        "From reports/cv_compare/*/comparison.json (`make cv-compare`): the mean fold difference A - B and its 95% "
        "interval; an interval that holds zero is not separated.",
        "",
        *markdown_table(["A", "B", "fold runs", "mean A - B", "low", "high", "verdict"], rows),
        "",
        "![every paired comparison](paired.png)",
        "",
        "![fold scores, A against B](folds.png)",
        "",
    ]


def results(config: Config) -> Path:
    tables, records = peer_tables(config), comparisons(config)
    if not tables and not records:
        raise DataError(
            f"{config.path('reports')}: no peers tables and no paired comparisons yet; "
            "`make peers` and `make cv-compare A=... B=...` write them"
        )
    target = config.path("reports", "results")
    with atomic_folder(target) as folder:
        lines = [
            "# Results",
            "",
            "Drawn by `make results` from the reports on disk; every number is the file's. Test columns are "
            "reports of what was chosen on validation, never choices.",
            "",
        ]
        for competition, table in tables.items():
            lines += competition_section(folder, config, competition, table)
        if records:
            lines += comparison_section(folder, records)
        (folder / "results.md").write_text("\n".join(lines))
    log.info(f"wrote {target}/results.md and {len(list(target.glob('*.png')))} figures")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.results", __doc__)
    return run_stage(results, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
