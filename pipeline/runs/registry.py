"""The registry of runs: run ids from configs, "the best run", resolving RUN= names, and the table
of every run (`make runs` prints it, pipeline/stages/runs.py).

A run lives in runs/<run_id>/ (its files: pipeline/runs/folder.py). The run id is
`<competition>_<model>_<regularizers>_<config hash>`: the same config gives the same id, so a stage
finds a run from its config alone.

`list_runs()` gives every run as one row of a pandas DataFrame. Columns: run_id, status
(complete / incomplete), experiment, competition, model, regularizer, backend, the flattened config
(`model.units`, `regularization.l2`, ...), the metrics (`val@0.5` = mean validation accuracy at test
noise 0.5, `val@0.5_std` its spread over noise draws, `select` the selection score, `test@0.5` the
organizer-side test accuracy, `test_file` the score of the competition's own noisy test file), and
the run's path. Notebooks load it with `pipeline.runs.registry.list_runs()`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import Config, load_config, moved_keys_placed
from pipeline.errors import DataError
from pipeline.files import short_hash
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runtime import backend_name

# ---- run ids -------------------------------------------------------------------------------------


def regularizer_tag(config: Config) -> str:
    """A short, readable summary of the active regularizers, e.g. 'gn0.5-l2-do0.3-x4'; 'none' if none."""
    r, a, t = config.regularization, config.augment, config.train
    kernel = "l1l2" if r.l1 and r.l2 else "l1" if r.l1 else "l2" if r.l2 else ""
    recurrent = "rl1l2" if r.recurrent_l1 and r.recurrent_l2 else "rl1" if r.recurrent_l1 else "rl2"
    switches = (kernel, recurrent if r.recurrent_l1 or r.recurrent_l2 else "", "bl" if r.bias_l1 or r.bias_l2 else "")
    valued = (
        [(r.input_dropout, "ido"), (r.dropout, "do"), (r.recurrent_dropout, "rdo"), (r.max_norm, "mn")]
        + [(a.jitter, "jit"), (a.scaling, "sc"), (a.magnitude_warp, "mw"), (a.time_warp, "tw")]
        + [(a.rotation_degrees, "rot"), (a.channel_dropout, "cd")]
    )
    parts = [f"gn{r.gaussian_noise:g}"] if r.gaussian_noise else []
    parts += [f"js{r.consistency:g}"] if r.consistency else []
    parts += [switch for switch in switches if switch]
    parts += [f"{short}{value:g}" for value, short in valued if value]
    parts += [f"perm{a.permutation_segments}"] if a.permutation_segments > 1 else []
    parts += [f"x{a.noised_copies}"] if a.noised_copies else []
    parts += [f"cos{t.warmup_epochs}"] if t.schedule == "cosine" else []
    trained = [
        (t.label_smoothing, "ls"),
        (t.weight_decay, "wd"),
        (t.clipnorm, "cn"),
        (t.clipvalue, "cv"),
        (t.ema, "ema"),
    ]
    parts += [f"{short}{value:g}" for value, short in trained if value]
    parts += ["noes"] if not t.early_stopping else []
    return "-".join(parts) or "none"


def config_hash(config: Config) -> str:
    """Hash of everything that changes the result (Config.result_dict: the fields not declared
    NOT_RESULT in pipeline/config.py) and the Keras backend: the same config on another backend is
    another run."""
    return short_hash({**config.result_dict(), "backend": backend_name()})


def model_tag(config: Config) -> str:
    """The model's name, its pooling when it is not the final state, and its extra branches:
    bilstm, bilstm-average, bilstm-ds4-ms3x9x19-stats-wideinput."""
    model = config.model
    parts = [model.name] + ([model.pooling] if model.pooling != "last" else [])
    parts += [f"ds{model.downsample}"] if model.downsample > 1 else []
    parts += ["ms" + "x".join(map(str, model.front_end))] if model.front_end else []
    parts += ["stats"] if model.window_stats else []
    parts += [f"wide{model.wide}"] if model.wide else []
    return "-".join(parts)


def run_id_for(config: Config) -> str:
    return f"{config.data.competition}_{model_tag(config)}_{regularizer_tag(config)}_{config_hash(config)}"


def finished_run(config: Config, run_id: str) -> Path:
    return RunFolder.of(config, run_id).finished_or_refused().path


def run_config(config: Config, run_dir: Path) -> Config:
    """The Config a run was trained with (its config.json), with this project's paths."""
    saved = moved_keys_placed(RunFolder(run_dir).config())
    if "cv" in saved and "inner_folds" not in saved["cv"]:  # saved before nested selection: the old protocol
        saved["cv"]["inner_folds"] = 0
    return load_config(None, [f"paths.root={config.root}", *config_overrides(saved)])


def config_overrides(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """A saved config.json back into `key=value` overrides (paths excluded: the caller decides where)."""
    items = []
    for key, value in tree.items():
        if key == "paths" and not prefix:
            continue
        if isinstance(value, dict):
            items += config_overrides(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={json.dumps(value)}")
    return items


# ---- "the best run" ---------------------------------------------------------------------------------


def best_run(config: Config, selection: dict[str, Any]) -> str:
    """The finished run of this competition with the best selection score, among the runs scored on
    exactly the selection `selection` defines (same validation series, noise profile, level, draws
    and seed: pipeline.data.datasets.selection_definition). Runs scored otherwise are not comparable and
    are left out; the test set is never read."""
    comparable, other = [], 0
    for folder in (RunFolder(path) for path in sorted(config.path("runs").glob("*")) if path.is_dir()):
        if not folder.finished or folder.lineage().competition != config.data.competition:
            continue
        scored = folder.metrics().get("selection")  # None for a refit: nothing held out
        if scored is None or scored["definition"] != selection:
            other += 1
            continue
        comparable.append((scored["score"], folder.name))
    if not comparable:
        hint = (
            f" ({other} finished run(s) were selected on another definition: other data, train.select_on or noise settings)"
            if other
            else ""
        )
        raise DataError(
            f"{config.path('runs')}: no finished run of competition {config.data.competition!r} "
            f"scored on this selection{hint}; run `make train` first, or name one with RUN="
        )
    return max(comparable)[1]


def cv_id_for(config: Config) -> str:
    """The id of the cross-validation of this config (`make cv`): its fold runs are ordinary runs."""
    repeats = f"x{config.cv.repeats}" if config.cv.repeats > 1 else ""
    return f"{config.data.competition}_cv{config.cv.folds}{repeats}_{model_tag(config)}_{regularizer_tag(config)}_{config_hash(config)}"


def resolve_runs(config: Config, run_ids: list[str]) -> list[str]:
    """Run ids as given; none = the best run of the competition (by its validation selection score,
    compared only with runs selected the same way); 'experiment' = the run of this config; 'cv' =
    the cross-validation of this config. A cross-validation (`cv` or its id, with or without a `cv:`
    prefix) stands for its fold runs: predicting with it averages the fold models."""
    from pipeline.data.datasets import (
        cv_selection_definition,
        load_training_data,
        open_competition,
        selection_definition,
        too_small_to_validate,
    )

    # A competition too small to validate on is trained as a cross-validation (pipeline.stages.train.main): its "run" is the CV.
    small = (not run_ids or "experiment" in run_ids) and too_small_to_validate(config, open_competition(config))
    if not run_ids:
        run_ids = [
            best_run(
                config,
                cv_selection_definition(config) if small else selection_definition(config, load_training_data(config)),
            )
        ]
    resolved = []
    for run_id in run_ids:
        run_id = (
            (cv_id_for(config) if small else run_id_for(config))
            if run_id == "experiment"
            else cv_id_for(config)
            if run_id == "cv"
            else run_id.removeprefix("cv:")
        )
        lineage = RunFolder.of(config, run_id).lineage_or_none()
        resolved += lineage.folds if lineage is not None and lineage.kind == "cv" else [run_id]
    return resolved


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
    folder = RunFolder(run_dir)
    if not folder.config_file.is_file():
        return None
    lineage = folder.lineage_or_none() or Lineage(run_id=run_dir.name)
    row: dict[str, Any] = {
        "run_id": run_dir.name,
        "status": "complete" if folder.finished else "pruned" if folder.pruned else "incomplete",
        "experiment": lineage.experiment,
        "competition": lineage.competition,
        "model": lineage.model,
        "regularizer": lineage.regularizer,
        "backend": lineage.backend,
        "modified": pd.Timestamp(folder.config_file.stat().st_mtime, unit="s"),
    }
    config = folder.config()
    config.pop("paths", None)
    row.update(flatten(config))
    if row["status"] == "complete":
        metrics = folder.metrics()
        # an ensemble run (make ensemble) trained nothing itself: it has none of these
        row.update({key: metrics.get(key) for key in ("best_epoch", "epochs_run", "train_seconds", "peak_rss_mb")})
        if metrics.get("selection"):
            row["select"] = metrics["selection"]["score"]
        for level, scores in metrics.get(
            "validation", {}
        ).items():  # transcription runs score sequences, not noise levels
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
    wanted = (
        ["run_id", "status", "model", "regularizer", "backend", "select"]
        + [c for c in runs.columns if (c.startswith(("val@", "test@")) and not c.endswith("_std")) or c == "test_file"]
        + ["best_epoch", "train_seconds"]
    )
    return runs[[c for c in wanted if c in runs.columns]]
