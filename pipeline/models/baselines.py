"""Honest baselines and peers: scikit-learn models on per-series statistical features, and MiniRocket.

Each series (T, C) becomes 6 statistics per channel (mean, std, min, max, first, last), the
classic hand-made features of activity recognition. They are fitted on the same training split
the recurrent models see and scored on the same series and noise, so every table shows how far
the recurrent models are ahead or behind. MiniRocket (aeon's `MiniRocketClassifier`, default
settings: about 10,000 convolutional kernels and a ridge classifier) reads the series themselves;
it needs at least 9 time steps, so shorter series (the classroom's 5) are zero-padded at the end,
as aeon advises.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

STATISTICS = ("mean", "std", "min", "max", "first", "last")


def series_statistics(series: np.ndarray) -> np.ndarray:
    """(n, T, C) -> (n, 6 C): mean, std, min, max, first and last value of every channel."""
    series = np.asarray(series, dtype=np.float64)
    return np.concatenate(
        [series.mean(1), series.std(1), series.min(1), series.max(1), series[:, 0], series[:, -1]], axis=1
    )


MINIROCKET_MIN_STEPS = 9  # its kernels are 9 steps long


def channels_first(series: np.ndarray) -> np.ndarray:
    """(n, T, C) -> aeon's (n, C, max(T, 9)), zero-padded at the end where T < 9."""
    series = np.transpose(np.asarray(series, dtype=np.float64), (0, 2, 1))
    missing = MINIROCKET_MIN_STEPS - series.shape[2]
    return np.pad(series, ((0, 0), (0, 0), (0, missing))) if missing > 0 else series


def make_minirocket(seed: int = 0) -> Pipeline:
    from aeon.classification.convolution_based import MiniRocketClassifier

    return make_pipeline(FunctionTransformer(channels_first), MiniRocketClassifier(random_state=seed, n_jobs=-1))


def make_baselines(seed: int = 0) -> dict[str, Pipeline]:
    features = FunctionTransformer(series_statistics)
    return {
        "logistic_regression": make_pipeline(features, StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)),
        "random_forest": make_pipeline(
            FunctionTransformer(series_statistics),
            RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=-1, random_state=seed),
        ),
    }


class ProbabilityModel:
    """Adapter: gives a fitted scikit-learn pipeline Keras' `predict(x, batch_size, verbose)` signature."""

    def __init__(self, pipeline: Pipeline, num_classes: int):
        self.pipeline, self.num_classes = pipeline, num_classes

    def predict(self, series: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        probabilities = np.zeros((len(series), self.num_classes))
        probabilities[:, self.pipeline.classes_] = self.pipeline.predict_proba(series)
        return probabilities


def fit_baselines(
    series: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0
) -> dict[str, ProbabilityModel]:
    """Every baseline fitted on (series, class indices)."""
    return {
        name: ProbabilityModel(pipeline.fit(series, labels), num_classes)
        for name, pipeline in make_baselines(seed).items()
    }


PEERS = ("logistic_regression", "random_forest", "minirocket")


def make_peers(seed: int = 0) -> dict[str, Pipeline]:
    """The baselines and MiniRocket, unfitted."""
    return {**make_baselines(seed), "minirocket": make_minirocket(seed)}


def make_peer(name: str, seed: int = 0) -> Pipeline:
    """One peer of `PEERS`, unfitted (MiniRocket's aeon import only when it is asked for)."""
    return make_minirocket(seed) if name == "minirocket" else make_baselines(seed)[name]
