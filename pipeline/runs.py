"""The run registry, `make runs`: every run under runs/ as one row of a pandas DataFrame.

Columns: run_id, status (complete / incomplete), experiment, competition, model, regularizer, backend,
the flattened config (`model.units`, `regularization.l2`, ...), the metrics
(`val@0.5` = mean validation accuracy at test noise 0.5, `val@0.5_std` its spread over noise
draws, `test@0.5` the organizer-side test accuracy, `test_file` the score of the competition's
own noisy test file), and the run's path. Notebooks load it with `pipeline.runs.list_runs()`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import load_config


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"units": 64}} -> {"model.units": 64}; tuples and lists become text for table cells."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return flat


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """One registry row, or None for a folder that is not a run."""
    if not (run_dir / "config.json").is_file():
        return None
    lineage = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    row: dict[str, Any] = {
        "run_id": run_dir.name,
        "status": "complete" if (run_dir / "metrics.json").is_file() else "incomplete",
        "experiment": lineage.get("experiment", ""),
        "competition": lineage.get("competition", ""),
        "model": lineage.get("model", ""),
        "regularizer": lineage.get("regularizer", ""),
        "backend": lineage.get("backend", "tensorflow"),  # runs made before other backends were tensorflow's
        "modified": pd.Timestamp((run_dir / "config.json").stat().st_mtime, unit="s"),
    }
    config = json.loads((run_dir / "config.json").read_text())
    config.pop("paths", None)
    row.update(flatten(config))
    if row["status"] == "complete":
        metrics = json.loads((run_dir / "metrics.json").read_text())
        row.update({key: metrics[key] for key in ("best_epoch", "epochs_run", "train_seconds", "peak_rss_mb")})
        for level, scores in metrics["validation"].items():
            row[f"val@{level}"] = scores["mean"]
            row[f"val@{level}_std"] = scores["std"]
        if "test" in metrics:
            row["test_file"] = metrics["test"]["competition_file"]
            for level, scores in metrics["test"]["noise_levels"].items():
                row[f"test@{level}"] = scores["mean"]
                row[f"test@{level}_std"] = scores["std"]
    row["path"] = str(run_dir)
    return row


def list_runs(runs_dir: str | Path | None = None) -> pd.DataFrame:
    """Every run under `runs_dir` (default: the project's runs/), newest first."""
    folder = Path(runs_dir) if runs_dir else load_config().path("runs")
    rows = [row for path in sorted(folder.glob("*")) if path.is_dir() for row in [read_run(path)] if row]
    table = pd.DataFrame(rows)
    return table.sort_values("modified", ascending=False, ignore_index=True) if len(table) else table


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns a person scans first: what was trained and how it holds up under noise."""
    wanted = ["run_id", "status", "model", "regularizer", "backend"] + [c for c in runs.columns if (c.startswith(("val@", "test@")) and not c.endswith("_std")) or c == "test_file"] + ["best_epoch", "train_seconds"]
    return runs[[c for c in wanted if c in runs.columns]]


def show(config_overrides: list[str], competition: str) -> None:
    runs = list_runs(load_config(None, config_overrides).path("runs"))
    if competition and len(runs):
        runs = runs[runs["competition"] == competition]
    print(summary_table(runs).to_markdown(index=False, floatfmt=".3f") if len(runs) else "no runs yet: `make train` makes one")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.runs", __doc__)
    parser.add_argument("--competition", default="", help="only runs of this competition")
    args = parser.parse_args(argv)
    return run_stage(lambda: show(args.set, args.competition))

if __name__ == "__main__":
    sys.exit(main())
