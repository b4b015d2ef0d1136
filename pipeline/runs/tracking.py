"""Every run in MLflow: a mirror of the run registry (`make ui` opens it: pipeline/stages/ui.py).

When a run finishes (`make train`, each fold of `make cv`, each trial's folds in `make tune`), its
folder is mirrored into an MLflow run: the resolved config as parameters (`model.units`, ...), the
per-epoch curves of history.csv and the scores of metrics.json as metrics (`val_noise_0.5` = mean
validation accuracy at test noise 0.5, `selection_score`, `test_noise_0.5` and `test_file` the
organizer-side reports), the run id, competition, backend and data-card checksum as tags, and the
model and JSON files as artifacts; `make evaluate` adds the report and its figures. A CV is a parent
run with its folds as children; a study's trials are runs of their own experiment, linked to their
CV (`har.cv_run`) and fold runs (`har.fold_runs`); `make peers` and `make compare` log their tables.

Where: `tracking.uri` (TRACKING=): empty = the embedded store sqlite:///<root>/runs/mlflow.db (no
server to start), a team's server (TRACKING=http://host:5000), or off. MLflow experiments are
named `har/<competition>` (runs, CVs, peers, comparisons) and `har/tune/<study>` (trials).

The registry stays the source of truth: run ids, resume and "the best run" come from runs/, never
from MLflow, so a store that is down, wiped or shared by a team changes no result. A tracking
failure prints one warning line per process and the run goes on untracked; requests give up after
a few seconds and are not retried, so a server that is down never slows training.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.data.datasets import DATACARD, competition_folder
from pipeline.files import sha256_file, short_hash
from pipeline.log import log
from pipeline.runs.folder import RunFolder

PREFIX = "har"
_failed: set[str] = set()  # stores that failed in this process: warned about once, then left alone


def tracking_uri(config: Config) -> str | None:
    """The MLflow tracking URI of this config, or None when tracking is off."""
    if config.tracking.uri == "off":
        return None
    return config.tracking.uri or f"sqlite:///{config.path('runs', 'mlflow.db')}"


def shown(uri: str) -> str:
    """A URI as warnings show it: any password masked."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':')[0]}:***@{host}" if ":" in credentials else uri
    return uri


def client_for(uri: str) -> Any:
    # Before mlflow is imported: one short attempt per request, so a server that is down costs a few seconds once.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    import logging

    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):  # the store's own INFO lines ("Creating initial MLflow database tables")
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


@functools.cache  # asked once per epoch by LiveCurves; the answer does not change within a process
def installed() -> bool:
    """MLflow is an optional part (requirements-tracking.txt): `make ui` installs it, `make all` does not."""
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


def guarded(config: Config, action: Callable[[Any], Any]) -> Any:
    """action(client), or None when tracking is off or fails (one warning line per store and process).
    Without MLflow installed, the project's own store is left alone quietly (`make ui` installs MLflow
    and mirrors the runs made before: backfill); a store the user named gets the warning line."""
    uri = tracking_uri(config)
    if uri is None or uri in _failed:
        return None
    if not installed() and not config.tracking.uri:
        return None
    try:
        return action(client_for(uri))
    except Exception as error:  # tracking never stops a run: whatever went wrong, warn once and go on
        _failed.add(uri)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        log.warning(
            f"warning: MLflow tracking to {shown(uri)} failed ({type(error).__name__}: {reason}); "
            "going on untracked (the run registry in runs/ is unaffected; TRACKING=off turns tracking off)",
        )
        return None


def experiment_id(client: Any, config: Config, name: str) -> str:
    """The MLflow experiment `name`, created on first use (artifacts beside the embedded store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = config.path("runs", "mlflow-artifacts").as_uri() if not config.tracking.uri else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another worker created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# ---- what a run folder becomes (pure) ---------------------------------------------------------------


def flat_params(config_tree: dict[str, Any]) -> dict[str, str]:
    """config.json -> MLflow parameters: `section.key` -> the value as JSON text (paths left out: where, not what)."""
    return {
        f"{section}.{key}": json.dumps(value) if not isinstance(value, str) else value
        for section, values in config_tree.items()
        if section != "paths" and isinstance(values, dict)
        for key, value in values.items()
    }


def score_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json -> flat MLflow metrics (names MLflow accepts: no @)."""
    flat: dict[str, float] = {}
    for key in ("best_epoch", "epochs_run", "best_validation", "train_seconds", "peak_rss_mb"):
        if isinstance(metrics.get(key), int | float):
            flat[key] = float(metrics[key])
    for level, value in (metrics.get("validation") or {}).items():
        flat[f"val_noise_{level}"] = float(value["mean"])
        flat[f"val_noise_{level}_std"] = float(value["std"])
    selection = metrics.get("selection") or {}
    if "score" in selection:
        flat["selection_score"] = float(selection["score"])
    if "std" in selection:
        flat["selection_std"] = float(selection["std"])
    test = metrics.get("test") or {}
    for level, value in (test.get("noise_levels") or {}).items():
        flat[f"test_noise_{level}"] = float(value["mean"])
    if "competition_file" in test:
        flat["test_file"] = float(test["competition_file"])
    return {key: value for key, value in flat.items() if math.isfinite(value)}


def history_metrics(history_csv: Path) -> list[tuple[str, float, int]]:
    """history.csv -> (metric, value, epoch) for every logged column and epoch (a redone epoch once, its last)."""
    import pandas as pd

    if not history_csv.is_file() or history_csv.stat().st_size == 0:
        return []
    history = pd.read_csv(history_csv).drop_duplicates("epoch", keep="last")
    return [
        (f"epoch_{column}", float(value), int(epoch))
        for column in history.columns
        if column != "epoch"
        for epoch, value in zip(history["epoch"], history[column])
        if pd.notna(value) and math.isfinite(float(value))
    ]


def log_values(
    client: Any, run_id: str, params: dict[str, str], metrics: list[tuple[str, float, int]], tags: dict[str, str]
) -> None:
    """Parameters, metrics and tags in batches within MLflow's limits (100 params, 1000 metrics a request)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    items = list(params.items())
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(key, value[:6000]) for key, value in items[start : start + 100]])
    for start in range(0, len(metrics), 1000):
        client.log_batch(
            run_id, metrics=[Metric(key, value, now, step) for key, value, step in metrics[start : start + 1000]]
        )
    client.log_batch(run_id, tags=[RunTag(key, value[:5000]) for key, value in tags.items()])


def find_mirror(client: Any, experiment: str, run_id: str) -> Any:
    found = client.search_runs([experiment], filter_string=f"tags.`har.run_id` = '{run_id}'", max_results=5)
    return found[0] if found else None


def data_card_checksum(config: Config) -> str:
    card = competition_folder(config) / DATACARD
    return sha256_file(card)[:16] if card.is_file() else ""


# ---- mirrors ------------------------------------------------------------------------------------------


def mirror_run(config: Config, run_dir: Path, kind: str = "") -> str | None:
    """Mirror a finished run folder (a run, a fold, a refit or a CV entry); returns its MLflow run id.
    Mirrored again only when its metrics changed (FORCE=1 trained it again): the old mirror is replaced."""
    folder = RunFolder(run_dir)
    if not folder.finished:
        return None

    def action(client: Any) -> str:
        metrics, lineage, saved = folder.metrics(), folder.lineage(), folder.config()
        experiment = experiment_id(client, config, f"{PREFIX}/{lineage.competition}")
        fingerprint = short_hash(metrics, 16, default=str)
        existing = find_mirror(client, experiment, run_dir.name)
        if existing is not None:
            if existing.data.tags.get("har.metrics_hash") == fingerprint:
                return existing.info.run_id
            client.delete_run(existing.info.run_id)
        run_kind = kind or (
            lineage.kind
            if lineage.kind != "run"
            else "refit"
            if saved["cv"]["refit"]
            else "fold"
            if saved["cv"]["fold"] >= 0
            else "run"
        )
        tags = {
            "mlflow.runName": run_dir.name,
            "har.run_id": run_dir.name,
            "har.kind": run_kind,
            "har.competition": lineage.competition,
            "har.experiment": lineage.experiment,
            "har.model": lineage.model,
            "har.regularizer": lineage.regularizer,
            "har.backend": lineage.backend,
            "har.data_card": data_card_checksum(config),
            "har.metrics_hash": fingerprint,
        }
        if run_kind == "cv":
            tags["har.folds"] = ",".join(lineage.folds)
        run = client.create_run(experiment, run_name=run_dir.name)
        values = [(key, value, 0) for key, value in score_metrics(metrics).items()]
        folds = (metrics.get("selection") or {}).get("folds") or []
        values += [("fold_selection_score", float(score), index) for index, score in enumerate(folds)]
        log_values(client, run.info.run_id, flat_params(saved), values + history_metrics(folder.history_file), tags)
        for path in folder.record_files:
            client.log_artifact(run.info.run_id, str(path))
        if run_kind == "cv":  # the folds become its children
            for fold in lineage.folds:
                child = find_mirror(client, experiment, fold)
                if child is not None:
                    client.set_tag(child.info.run_id, "mlflow.parentRunId", run.info.run_id)
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    return guarded(config, action)


LIVE = "har.live"  # the tag of a provisional mirror, logged epoch by epoch while its run trains


def log_epoch(config: Config, live: dict[str, str], run_name: str, competition: str, epoch: int, logs: dict) -> None:
    """One finished epoch's logs into the provisional mirror of `run_name` (created on the first
    epoch; a killed run's is taken up again), so `make ui` shows a long run's curves as it trains.
    `live` keeps its MLflow run id between epochs. When the run finishes, mirror_run replaces the
    provisional mirror with the finished one (it has no metrics hash)."""

    def action(client: Any) -> None:
        if "id" not in live:
            experiment = experiment_id(client, config, f"{PREFIX}/{competition}")
            existing = find_mirror(client, experiment, run_name)
            if existing is not None and LIVE in existing.data.tags:
                live["id"] = existing.info.run_id
            else:
                if existing is not None:  # trained again (FORCE=1): the old mirror is replaced at the end anyway
                    client.delete_run(existing.info.run_id)
                tags = {"mlflow.runName": run_name, "har.run_id": run_name, "har.competition": competition, LIVE: "1"}
                live["id"] = client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
        values = [
            (f"epoch_{name}", float(value), epoch)
            for name, value in logs.items()
            if isinstance(value, int | float | np.floating) and math.isfinite(float(value))
        ]
        log_values(client, live["id"], {}, values, {})

    guarded(config, action)


def backfill(config: Config) -> int:
    """Mirror every finished run folder not mirrored yet (runs, folds, CV entries, ensembles): the runs
    made while MLflow was not installed or the store was down. A mirrored run is found and left as
    it is, so this is cheap when nothing is missing. The number of folders looked at."""
    folders = [path for path in sorted(config.path("runs").glob("*")) if path.is_dir() and RunFolder(path).finished]
    for path in folders:
        if RunFolder(path).lineage().kind == "cv":
            mirror_cv(config, path)
        else:
            mirror_run(config, path)
    return len(folders)


def mirror_cv(config: Config, cv_dir: Path) -> str | None:
    """Mirror a CV entry and its folds (each fold first, so that it can be made a child)."""
    lineage = RunFolder(cv_dir).lineage()
    for fold in lineage.folds:
        mirror_run(config, config.path("runs", fold))
    if lineage.refit:
        mirror_run(config, config.path("runs", lineage.refit))
    return mirror_run(config, cv_dir, "cv")


def add_artifacts(config: Config, run_dir: Path, files: list[Path]) -> None:
    """Attach files (make evaluate's report and figures) to a run's mirror, mirroring the run first if needed."""
    mirrored = mirror_run(config, run_dir)
    if mirrored is None:
        return
    guarded(config, lambda client: [client.log_artifact(mirrored, str(path), "report") for path in files])


def mirror_trial(config: Config, study: str, trial: Any) -> str | None:
    """Mirror one Optuna trial into `har/tune/<study>`, linked to its CV's mirror and its fold runs."""
    if "skipped" in trial.user_attrs:
        return None

    def action(client: Any) -> str:
        experiment = experiment_id(client, config, f"{PREFIX}/tune/{study}")
        name = f"trial {trial.number}"
        existing = find_mirror(client, experiment, f"{study}/{trial.number}")
        if existing is not None:
            client.delete_run(existing.info.run_id)
        cv_id = trial.user_attrs.get("cv_id", "")
        tags = {
            "mlflow.runName": name,
            "har.run_id": f"{study}/{trial.number}",
            "har.kind": "trial",
            "har.study": study,
            "har.trial": str(trial.number),
            "har.state": trial.state.name.lower(),
            "har.cv_id": cv_id,
            "har.competition": config.data.competition,
        }
        if "failed_trial" in trial.system_attrs:
            tags["har.retry_of"] = str(trial.system_attrs["failed_trial"])
        cv_lineage = RunFolder.of(config, cv_id).lineage_or_none() if cv_id else None
        if cv_lineage is not None:
            tags["har.fold_runs"] = ",".join(cv_lineage.folds)
            runs_experiment = experiment_id(client, config, f"{PREFIX}/{config.data.competition}")
            cv_mirror = find_mirror(client, runs_experiment, cv_id)
            if cv_mirror is not None:
                tags["har.cv_run"] = cv_mirror.info.run_id
        run = client.create_run(experiment, run_name=name)
        values = [("selection_score", float(trial.value), 0)] if trial.value is not None else []
        values += [("intermediate_score", float(value), int(step)) for step, value in trial.intermediate_values.items()]
        log_values(
            client, run.info.run_id, {key: json.dumps(value) for key, value in trial.params.items()}, values, tags
        )
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(trial.state.name, "FAILED")
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    return guarded(config, action)


def mirror_table(config: Config, kind: str, rows: list[dict[str, Any]], files: list[Path]) -> None:
    """A study's table (make peers: one MLflow run per row; make compare: one run for the report) with its files."""

    def action(client: Any) -> None:
        experiment = experiment_id(client, config, f"{PREFIX}/{config.data.competition}")
        for row in rows:
            label = f"{kind}: {row['name']}"
            existing = find_mirror(client, experiment, label)
            if existing is not None:
                client.delete_run(existing.info.run_id)
            run = client.create_run(experiment, run_name=label)
            values = [
                (key.replace("@", "_noise_").replace(" ", "_"), float(value), 0)
                for key, value in row.items()
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))
            ]
            params = {key: str(value) for key, value in row.get("params", {}).items()}
            tags = {
                "mlflow.runName": label,
                "har.run_id": label,
                "har.kind": kind,
                "har.competition": config.data.competition,
            }
            log_values(client, run.info.run_id, params, values, tags)
            for path in files:
                client.log_artifact(run.info.run_id, str(path))
            client.set_terminated(run.info.run_id, "FINISHED")

    guarded(config, action)
