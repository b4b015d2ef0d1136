"""Honest baselines and peers: scikit-learn models on per-series statistical features, and the
strongest time-series classifiers a practitioner would pick (aeon's).

Each series (T, C) becomes 6 statistics per channel (mean, std, min, max, first, last), the
classic hand-made features of activity recognition. They are fitted on the same training split
the recurrent models see and scored on the same series and noise, so every table shows how far
the recurrent models are ahead or behind. The time-series peers read the series themselves, at
aeon's default settings:
- MiniRocket (`MiniRocketClassifier`: about 10,000 convolutional kernels and a ridge classifier,
  whose probabilities here are the softmax of its decision values, not aeon's one-hot votes);
- MultiRocket-Hydra (second only to HIVE-COTE 2 in the 2023 bake-off of Middlehurst, Schafer and
  Bagnall), made to fit in memory by pipeline.models.rocket;
- QUANT (`QUANTClassifier`: quantiles of dyadic intervals and extra trees, close to MiniRocket at a
  fraction of its cost).
The last two need PyTorch (`make peers` installs it). MiniRocket's kernels are 9 steps long and
MultiRocket also reads first differences, so shorter series (the classroom's 5) are zero-padded at
the end to 9 and 10 steps, as aeon advises.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from pipeline.config import Config
from pipeline.errors import ConfigError, DataError
from pipeline.runtime import PeakMemory

STATISTICS = ("mean", "std", "min", "max", "first", "last")


def series_statistics(series: np.ndarray) -> np.ndarray:
    """(n, T, C) -> (n, 6 C): mean, std, min, max, first and last value of every channel."""
    series = np.asarray(series, dtype=np.float64)
    return np.concatenate(
        [series.mean(1), series.std(1), series.min(1), series.max(1), series[:, 0], series[:, -1]], axis=1
    )


MINIROCKET_MIN_STEPS = 9  # its kernels are 9 steps long


def channels_first(series: np.ndarray, min_steps: int = MINIROCKET_MIN_STEPS) -> np.ndarray:
    """(n, T, C) -> aeon's (n, C, max(T, min_steps)), zero-padded at the end where T < min_steps."""
    series = np.transpose(np.asarray(series, dtype=np.float64), (0, 2, 1))
    missing = min_steps - series.shape[2]
    return np.pad(series, ((0, 0), (0, 0), (0, missing))) if missing > 0 else series


def make_minirocket(seed: int = 0) -> Pipeline:
    from aeon.classification.convolution_based import MiniRocketClassifier

    from pipeline.models.rocket import ALPHAS, SoftmaxRidgeClassifierCV

    # aeon's own ridge (same alphas), with the softmax of its decision values as probabilities
    ridge = SoftmaxRidgeClassifierCV(alphas=np.array(ALPHAS))
    return make_pipeline(
        FunctionTransformer(channels_first), MiniRocketClassifier(estimator=ridge, random_state=seed, n_jobs=-1)
    )


def make_multirocket_hydra(seed: int = 0) -> Pipeline:
    from pipeline.models.rocket import MULTIROCKET_MIN_STEPS, MultiRocketHydra

    return make_pipeline(
        FunctionTransformer(channels_first, kw_args={"min_steps": MULTIROCKET_MIN_STEPS}),
        MultiRocketHydra(random_state=seed),
    )


def make_quant(seed: int = 0) -> Pipeline:
    from aeon.classification.interval_based import QUANTClassifier
    from sklearn.ensemble import ExtraTreesClassifier

    # QUANT's own default forest, on every core (aeon's default fits it on one)
    forest = ExtraTreesClassifier(n_estimators=200, max_features=0.1, criterion="entropy", n_jobs=-1, random_state=seed)
    return make_pipeline(
        FunctionTransformer(channels_first, kw_args={"min_steps": 1}),
        QUANTClassifier(estimator=forest, random_state=seed),
    )


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


TIME_SERIES_PEERS = {
    "minirocket": make_minirocket,
    "multirocket_hydra": make_multirocket_hydra,
    "quant": make_quant,
}
PEERS = ("logistic_regression", "random_forest", *TIME_SERIES_PEERS)
NEEDS_TORCH = ("multirocket_hydra", "quant")


def check_can_fit(name: str) -> None:
    """One line where a peer's dependency is missing (the time-series peers need aeon; MultiRocket-Hydra
    and QUANT PyTorch too)."""
    if name in TIME_SERIES_PEERS and importlib.util.find_spec("aeon") is None:
        raise ConfigError(f"peer {name} needs aeon (requirements-peers.txt): make peers installs it")
    if name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
        raise ConfigError(f"peer {name} needs PyTorch: run make install-torch (make peers does)")


def make_peer(name: str, seed: int = 0) -> Pipeline:
    """One peer of `PEERS`, unfitted (aeon is imported only for the peers asked for)."""
    return TIME_SERIES_PEERS[name](seed) if name in TIME_SERIES_PEERS else make_baselines(seed)[name]


@dataclass(frozen=True)
class FittedPeer:
    model: ProbabilityModel
    seconds: float  # the fit's wall time
    peak_gib: float | None  # the process's peak resident memory during the fit (runtime.PeakMemory)
    series: int  # how many series it was fitted on, noised copies included


def fit_peer(name: str, seed: int, series: np.ndarray, labels: np.ndarray, classes: int) -> FittedPeer:
    """Fit a peer, timed and with its peak memory: how make peers and cv-compare's peer folds fit one."""
    started = time.perf_counter()
    with PeakMemory() as peak:
        fitted = make_peer(name, seed).fit(series, labels)
    return FittedPeer(ProbabilityModel(fitted, classes), round(time.perf_counter() - started, 1), peak.gib, len(series))


def peer_spec(spec: str) -> tuple[str, bool]:
    """'minirocket+copies' -> ('minirocket', True): a peer and whether noised copies join its
    training series; an unknown one, or one whose dependency is missing, is one line."""
    name, _, extra = spec.partition("+")
    if name not in PEERS or extra not in ("", "copies"):
        raise DataError(f"peer:{spec}: unknown peer (known: {', '.join(PEERS)}; add +copies for the noised copies)")
    check_can_fit(name)
    return name, extra == "copies"


def fit_peer_spec(
    spec: str, config: Config, series: np.ndarray, labels: np.ndarray, unit: np.ndarray, classes: int
) -> FittedPeer:
    """A peer named as `peer_spec` reads it, fitted on (series, class indices); with `+copies`,
    `peers.noised_copies` copies of them noised at `augment.noised_copies_level` (in `unit`, the
    clean-train std per channel) join them, as make peers adds them."""
    from pipeline.models import augment  # Keras comes with it: only the callers that fit a peer need it

    name, copies = peer_spec(spec)
    series, labels = augment.noised_copies(
        series,
        labels,
        config.peers.noised_copies if copies else 0,
        config.augment.noised_copies_level,
        config.data.noise_profile,
        unit,
        config.train.seed,
    )
    return fit_peer(name, config.train.seed, series, labels, classes)
