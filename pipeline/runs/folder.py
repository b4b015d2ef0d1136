"""A run folder: the one type that names a run's files, writes them one way and reads them back checked.

  config.json        the resolved Config (defaults + experiment + overrides)
  run.json           lineage (`Lineage`): run id, experiment, competition, classes, channels, data card inputs
  environment.json   package versions, Keras backend and its devices, replicas, precision, XLA as Keras applied it
  history.csv        one row per epoch (loss, accuracy, clean and noisy validation accuracy, lr)
  checkpoint.keras   the best epoch so far, while the run trains
  model.keras        the best model (selected on noisy validation by default)
  blend.pkl          a blend's fold run instead (make blend): its peers, noise gate and member ids
  out_of_fold.npz    a fold blend's members' predictions on its held-out series at every gate level
                     (what the other folds' gates and the refit's were fitted on), so the refit reads
                     them instead of loading and predicting with every fold's members again
  split.json         a CV fold run only: the series it trained on, chose on (an inner fold of its
                     training part) and is scored on (its held-out fold), and their subjects
  pruned.json        written by the tuner into a run it stopped early: the run stays unfinished
  metrics.json       written last: accuracy on the scored series at several test-noise levels,
                     host-side test scores, and the checksums of model.keras and history.csv
  backup/            Keras' BackupAndRestore while the run trains: a killed run resumes from it
  logs/              TensorBoard

A CV entry and an ensemble are run folders too: a CV entry holds config.json, run.json (kind "cv",
its fold runs) and metrics.json; an ensemble is a run with a model (kind "ensemble", its members).
A blend's fold run (kind "blend") holds blend.pkl, the pickle of a pipeline.models.blend.BlendModel
without its Keras members, which stay in their own run folders; it is read only after its checksum
matches, like model.keras (both are this project's own output: load no run folder you did not make).

One writer at a time (`RunFolder.writing`): a second process that wants to write the same folder
waits for the first, naming it, and then finds the folder finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.files import atomic_files, sha256_file, write_json_atomic
from pipeline.log import log

CHECKSUMS = "checksums"  # in metrics.json: the sha256 of model.keras and history.csv as the run finished


@dataclass(frozen=True)
class Lineage:
    """run.json: where a run, a CV entry or an ensemble came from. Runs written before a field existed
    read back with its default."""

    run_id: str = ""
    competition: str = ""
    model: str = ""
    regularizer: str = ""
    experiment: str = ""
    kind: str = "run"  # "run", "cv" (a CV entry), "ensemble" or "blend"
    backend: str = "tensorflow"  # runs made before other backends were TensorFlow's
    classes: list[Any] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    series_shape: list[int] = field(default_factory=list)
    data_inputs: Any = None  # the competition's data card inputs as the run was trained
    train_std: list[float] | None = None
    train_series: int | None = None  # the series fitted on, noised copies included
    train_ids: str | None = None  # a hash of the training series' ids (runs since 2026-12-02)
    parameters: int | None = None
    batch_size: int | None = None
    patience: int | None = None
    seed: int | None = None  # a transcription run's seed
    members: list[str] = field(default_factory=list)  # an ensemble's runs
    folds: list[str] = field(default_factory=list)  # a CV entry's fold runs
    refit: str | None = None  # a CV entry's refit run on every labeled series

    def data_fields(self) -> dict[str, Any]:
        """What a combination of runs (a blend, a combined CV entry) takes from its first member."""
        keys = ("competition", "backend", "classes", "channels", "series_shape", "data_inputs")
        return {key: getattr(self, key) for key in keys}

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> Lineage:
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in content.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        """The fields that hold something: a plain run's run.json has no members, folds or refit."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value not in (None, [])}


@dataclass(frozen=True)
class RunFolder:
    """runs/<run_id>/: every path of a run, whether it is finished, and its files read and written."""

    path: Path

    @classmethod
    def of(cls, config: Any, run_id: str) -> RunFolder:
        return cls(config.path("runs", run_id))

    @property
    def name(self) -> str:
        return self.path.name

    # ---- the files, by name (nothing outside this class spells them) --------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def lineage_file(self) -> Path:
        return self.path / "run.json"

    @property
    def environment_file(self) -> Path:
        return self.path / "environment.json"

    @property
    def history_file(self) -> Path:
        return self.path / "history.csv"

    @property
    def checkpoint_file(self) -> Path:
        return self.path / "checkpoint.keras"

    @property
    def blend_file(self) -> Path:
        return self.path / "blend.pkl"

    @property
    def out_of_fold_file(self) -> Path:
        return self.path / "out_of_fold.npz"

    @property
    def model_file(self) -> Path:
        """model.keras, or a blend's blend.pkl: the file predictions come from."""
        return self.blend_file if self.blend_file.is_file() else self.path / "model.keras"

    @property
    def split_file(self) -> Path:
        return self.path / "split.json"

    @property
    def pruned_file(self) -> Path:
        return self.path / "pruned.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def backup_dir(self) -> Path:
        return self.path / "backup"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def record_files(self) -> list[Path]:
        """The files that describe the finished run (what tracking mirrors and a report is built from)."""
        files = (
            self.config_file,
            self.lineage_file,
            self.metrics_file,
            self.history_file,
            self.environment_file,
            self.model_file,
        )
        return [path for path in files if path.is_file()]

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """metrics.json is written last: its presence marks a finished run (or CV entry)."""
        return self.metrics_file.is_file()

    @property
    def pruned(self) -> bool:
        return self.pruned_file.is_file()

    def finished_or_refused(self) -> RunFolder:
        if not self.finished:
            raise DataError(
                f"{self.path}: not a finished run (no {self.metrics_file.name}); `make runs` lists the runs"
            )
        return self

    # ---- reading ---------------------------------------------------------------------------------------
    def lineage(self) -> Lineage:
        return Lineage.from_dict(json.loads(self.lineage_file.read_text()))

    def lineage_or_none(self) -> Lineage | None:
        return self.lineage() if self.lineage_file.is_file() else None

    def config(self) -> dict[str, Any]:
        """config.json as saved (a dict: the run's own Config is pipeline.runs.registry.run_config)."""
        return json.loads(self.config_file.read_text())

    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_file.read_text())

    def environment(self) -> dict[str, Any]:
        return json.loads(self.environment_file.read_text())

    def rebuild_hint(self) -> str:
        """The command that makes this folder again, for an error about one of its files."""
        lineage = self.lineage_or_none()
        if lineage is not None and lineage.kind == "ensemble":
            return f'delete {self.path} and run `make ensemble RUN="{" ".join(lineage.members)}"` again'
        if lineage is not None and lineage.kind == "blend":
            return f"delete {self.path} and run the `make blend` that made it again (its members: {self.lineage_file})"
        return f"train it again with `make train FORCE=1` and the settings recorded in {self.config_file}"

    def checked(self, path: Path) -> Path:
        """A file of a finished run, refused in one line when it is missing or no longer the file the
        run finished with (its checksum in metrics.json; runs finished before checksums were recorded
        are taken as they are)."""
        if not path.is_file():
            raise DataError(f"{path}: missing; {self.rebuild_hint()}")
        recorded = self.metrics().get(CHECKSUMS, {}) if self.finished else {}
        if path.name in recorded and sha256_file(path) != recorded[path.name]:
            raise DataError(
                f"{path}: damaged or changed since the run finished (not the checksum recorded in "
                f"{self.metrics_file.name}); {self.rebuild_hint()}"
            )
        return path

    def load_model(self) -> Any:
        """The Keras model of a finished run, after its checksum is checked; a blend's BlendModel with
        its Keras members loaded from their own (checked) run folders."""
        from pipeline import models

        if self.blend_file.is_file():
            with self.checked(self.blend_file).open("rb") as file:
                blend = pickle.load(file)  # this project's own file, its checksum checked
            members = {
                index: RunFolder(self.path.parent / blend.names[index]).finished_or_refused().load_model()
                for index in blend.keras_members
            }
            return blend.with_keras_members(members)
        return models.load_model(str(self.checked(self.model_file)))

    def history(self, finished: bool = True) -> pd.DataFrame:
        """history.csv, one row per epoch (a redone epoch once, its last), refused in one line when it
        is damaged: not the finished run's file, or not a table of numbers (two writers' interleaved
        logs hold a second header). `finished` False: a run being resumed, which has no checksum yet."""
        path = self.checked(self.history_file) if finished else self.history_file
        try:
            history = pd.read_csv(path).apply(pd.to_numeric)
            if "epoch" not in history or not len(history):
                raise ValueError("no epoch rows")
        except (ValueError, pd.errors.ParserError) as error:
            hint = self.rebuild_hint() if finished else "start the run again with `make train FORCE=1`"
            raise DataError(
                f"{path}: cannot be read as a training log ({str(error).splitlines()[0]}); {hint}"
            ) from None
        return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)

    # ---- writing -----------------------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this folder's lock while writing it: runs/.<run_id>.lock, a hidden file beside the
        folder, not in it (a forced rerun deletes the folder, and a lock file deleted while held would
        let a third process lock a new file of the same name) and not a folder (what lists runs/ finds
        runs only). A second writer waits, naming the process id the holder wrote beside the lock."""
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path.parent / f".{self.name}.lock")
        holder = Path(lock.lock_file + ".pid")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            owner = holder.read_text().strip() if holder.is_file() else "another process"
            log.info(f"{self.path}: being written by process {owner}; waiting for it to finish")
            lock.acquire()
        try:
            holder.write_text(f"{os.getpid()}\n")
            yield
        finally:
            lock.release()

    def start(self, config: dict[str, Any], lineage: Lineage) -> None:
        """The files a run writes before it trains: config.json and run.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_file, config)
        write_json_atomic(self.lineage_file, lineage.to_dict())

    def write_environment(self, environment: dict[str, Any]) -> None:
        write_json_atomic(self.environment_file, environment)

    def write_split(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.split_file, record)

    def mark_pruned(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.pruned_file, record)

    def finish(
        self,
        model: Any,
        metrics: dict[str, Any],
        config: dict[str, Any] | None = None,
        lineage: Lineage | None = None,
        split: dict[str, Any] | None = None,
    ) -> None:
        """Finish a run the one way every trainer does: its JSON files, model.keras, then metrics.json
        last (its presence marks the run done), with the checksums of model.keras and history.csv so
        that a file damaged or changed later is recognised (`checked`)."""
        from pipeline import models

        self.path.mkdir(parents=True, exist_ok=True)
        for path, content in (
            (self.config_file, config),
            (self.lineage_file, lineage.to_dict() if lineage else None),
            (self.split_file, split),
        ):
            if content is not None:
                write_json_atomic(path, content)
        models.save_model(model, self.model_file)
        checksums = {path.name: sha256_file(path) for path in (self.model_file, self.history_file) if path.is_file()}
        write_json_atomic(self.metrics_file, {**metrics, CHECKSUMS: checksums})

    def finish_blend(
        self,
        blend: Any,
        metrics: dict[str, Any],
        config: dict[str, Any],
        lineage: Lineage,
        split: dict[str, Any],
        out_of_fold: dict[str, Any] | None = None,
    ) -> None:
        """Finish a blend's fold run like `finish`: its JSON files, blend.pkl (and a fold blend's
        out_of_fold.npz, arrays by name), then metrics.json last with their checksums."""
        self.path.mkdir(parents=True, exist_ok=True)
        for path, content in (
            (self.config_file, config),
            (self.lineage_file, lineage.to_dict()),
            (self.split_file, split),
        ):
            write_json_atomic(path, content)
        with atomic_files(self.blend_file) as (temp,):
            with temp.open("wb") as file:
                pickle.dump(blend, file, protocol=pickle.HIGHEST_PROTOCOL)
        written = [self.blend_file]
        if out_of_fold is not None:
            with atomic_files(self.out_of_fold_file) as (temp,):
                with temp.open("wb") as file:  # a file object: np.savez would add .npz to the temp's name
                    np.savez_compressed(file, **out_of_fold)
            written.append(self.out_of_fold_file)
        write_json_atomic(self.metrics_file, {**metrics, CHECKSUMS: {path.name: sha256_file(path) for path in written}})

    def out_of_fold(self) -> dict[str, Any] | None:
        """A finished fold blend's out_of_fold.npz (checked), or None where it has none (fold blends
        finished before 2026-12-06 kept no predictions)."""
        if not (self.finished and self.out_of_fold_file.is_file()):
            return None
        with np.load(self.checked(self.out_of_fold_file), allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}

    def finish_entry(self, config: dict[str, Any], lineage: Lineage, metrics: dict[str, Any]) -> None:
        """Write a CV entry (no model of its own): its three files replaced together, metrics.json last."""
        contents = {self.config_file: config, self.lineage_file: lineage.to_dict(), self.metrics_file: metrics}
        with atomic_files(*contents) as temps:
            for temp, content in zip(temps, contents.values()):
                temp.write_text(json.dumps(content, indent=2, default=str) + "\n")
