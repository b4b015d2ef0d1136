"""The recurrent models as a scikit-learn estimator: `RecurrentClassifier`, for users who want the
noise-robust BiLSTM (or any registered model) inside their own `cross_val_score`, `Pipeline`, grid
search or aeon benchmark, without make targets or run folders.

    from pipeline.runs.estimator import RecurrentClassifier
    model = RecurrentClassifier("bilstm", settings={"train.epochs": 30, "model.units": 64})
    model.fit(X, y)            # X: (n series, time steps, channels); y: any labels
    model.predict(X_new), model.predict_proba(X_new), model.score(X_test, y_test)

aeon's layout, (n, channels, time), is taken with `layout="channels_time"`.

One training code path: `fit` writes the arrays as a competition folder in a work folder (a
temporary one unless `work_dir` is given) and calls `pipeline.runs.training.train`, exactly what
`make train` runs: the model, its normalization, the noise layer, noised copies, early stopping
and the checkpoint chosen on a held-out part of the series, as the config says. The held-out part is
fold 0 of `round(1 / validation_fraction)` folds: of whole groups when `fit` is given `groups`
(subjects: never a random sample of windows that overlap their neighbours), else a block of the
series in the order given, its neighbours purged. `settings` are the project's config keys (any
`SET=` of make train, e.g. "model.bilstm.backward_cell": "gru") over `experiment`, make train's
EXP= (experiments/default.toml: the noise layer at the test's level). The fitted Keras model pickles with the estimator (as a .keras archive)
and `save` writes it as a .keras file, which `make export` and Keras load.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

LAYOUTS = ("time_channels", "channels_time")
COMPETITION = "estimator"  # the competition folder's name in the work folder


def as_series(X: Any, layout: str, expected: tuple[int, int] | None = None) -> np.ndarray:
    """(n, time, channels) float32 from X in `layout`; one line naming the shapes when X is not that."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: use 'time_channels' (n, time, channels) or 'channels_time' (aeon's)")
    series = np.asarray(X, dtype=np.float32)
    if series.ndim != 3:
        wanted = "(n series, time steps, channels)" if layout == "time_channels" else "(n series, channels, time steps)"
        raise ValueError(
            f"X has shape {series.shape}: RecurrentClassifier takes {wanted} with layout={layout!r}"
            + (", or aeon's (n, channels, time) with layout='channels_time'" if layout == "time_channels" else "")
        )
    if layout == "channels_time":
        series = np.transpose(series, (0, 2, 1))
    if expected is not None and series.shape[1:] != expected:
        raise ValueError(
            f"X has series of {series.shape[1]} steps x {series.shape[2]} channels (layout={layout!r}); "
            f"the model was fitted on {expected[0]} x {expected[1]}"
        )
    if not np.isfinite(series).all():
        raise ValueError("X holds NaN or infinite values")
    return series


class RecurrentClassifier(ClassifierMixin, BaseEstimator):
    """A registered model (`make models` lists them) trained with the project's recipe, as a
    scikit-learn classifier. `settings`: config keys and values, applied over the defaults."""

    def __init__(
        self,
        model: str = "bilstm",
        settings: dict[str, Any] | None = None,
        experiment: str | None = "experiments/default.toml",
        validation_fraction: float = 0.2,
        layout: str = "time_channels",
        random_state: int = 0,
        verbose: int = 0,
        work_dir: str | None = None,
    ):
        self.model = model
        self.settings = settings
        self.experiment = experiment
        self.validation_fraction = validation_fraction
        self.layout = layout
        self.random_state = random_state
        self.verbose = verbose
        self.work_dir = work_dir

    def config(self, root: Path) -> Any:
        """The run's config: the defaults, this estimator's settings, and its work folder."""
        from pipeline.config import load_config

        if not 0 < self.validation_fraction <= 0.5:
            raise ValueError(f"validation_fraction={self.validation_fraction}: must be in (0, 0.5]")
        settings = {
            "model.name": self.model,
            "train.seed": self.random_state,
            "train.verbose": 1 if self.verbose > 1 else 0,
            **(self.settings or {}),
            "paths.root": str(root),
            "data.competition": COMPETITION,
            "cv.folds": max(2, round(1 / self.validation_fraction)),
        }
        return load_config(self.experiment, [f"{key}={json.dumps(value)}" for key, value in settings.items()])

    def fit(self, X: Any, y: Any, groups: Any = None) -> RecurrentClassifier:
        from pipeline.data.competition import Split, write_competition
        from pipeline.data.datasets import competition_folder, stamp_as_is
        from pipeline.runs.folder import RunFolder
        from pipeline.runs.training import train

        series = as_series(X, self.layout)
        labels = np.asarray(y)
        if labels.shape != (len(series),):
            raise ValueError(f"y has shape {labels.shape}: one label per series, ({len(series)},)")
        self.classes_, activities = np.unique(labels, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("y holds one class: a classifier needs two or more")
        subjects = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1] + 1
        with contextlib.ExitStack() as stack:
            root = Path(self.work_dir) if self.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
            config = self.config(root)
            folder = competition_folder(config)
            folder.mkdir(parents=True, exist_ok=True)
            ids = np.array([f"{index:07d}" for index in range(len(series))])
            channels = tuple(f"channel_{index}" for index in range(series.shape[2]))
            splits = {  # a competition needs a test split: one series stands in, never scored
                "train": Split(series, ids, activities + 1, subjects),
                "test": Split(series[:1], np.array(["test"])),
            }
            write_competition(folder, "npz", channels, splits, default_activity=1)
            stamp_as_is(folder, COMPETITION, {"kind": "estimator", "series": len(series)})
            quiet = contextlib.redirect_stdout(io.StringIO()) if self.verbose == 0 else contextlib.nullcontext()
            with quiet:
                run = RunFolder(train(config))
                self.model_ = run.load_model()
            self.run_id_ = run.name
            self.metrics_ = run.metrics()
        self.series_shape_ = series.shape[1:]
        self.n_features_in_ = series.shape[2]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        series = as_series(X, self.layout, self.series_shape_)
        return np.asarray(self.model_.predict(series, batch_size=256, verbose=0), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def save(self, path: str | Path) -> Path:
        """The fitted Keras model as a .keras file (its output i is `classes_[i]`)."""
        check_is_fitted(self, "model_")
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"{path}: a Keras model is saved as a .keras file")
        self.model_.save(path)
        return path

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if "model_" in state:  # the Keras model travels as its .keras archive
            with tempfile.TemporaryDirectory() as folder:
                state["model_"] = self.save(Path(folder) / "estimator.keras").read_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("model_"), bytes):
            from pipeline import models

            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "estimator.keras"
                path.write_bytes(state["model_"])
                state["model_"] = models.load_model(str(path))
        self.__dict__.update(state)
