"""MultiRocket-Hydra (Dempster, Schmidt and Webb 2023) in bounded memory, for `make peers`.

aeon's `MultiRocketHydraClassifier` makes Hydra's 4,096 and MultiRocket's 49,728 features of every
series at once in float64 and hands them to scikit-learn's `RidgeClassifierCV`, which copies them
again (as float64, centered). On the raw training windows plus one noised copy (14,830 series) that
passed the 24 GiB of our machines. `MultiRocketHydra` computes the very same model in less memory:

- the same transforms (aeon's `HydraTransformer` and `MultiRocket`, same seeds) run on batches of
  `batch_size` series into one float32 matrix (3.2 GB for those series), scaled as aeon scales them;
- the ridge is `GramRidgeClassifier`: `RidgeClassifierCV`'s own method when features outnumber
  series ("gram" mode: the eigendecomposition of the series' Gram matrix gives the leave-one-out
  error of every alpha at once), with the Gram matrix built from float64 column blocks instead of a
  float64 copy of the whole matrix. It equals scikit-learn's fit (tests/test_rocket.py).

Peak memory is then the float32 features plus about four n x n float64 matrices (about 10 GB for
those 14,830 series), instead of aeon's three float64 copies of the features.

A ridge classifier has no probabilities, so aeon's MiniRocket and MultiRocket-Hydra give one-hot
votes. Here both ridges give the softmax of their decision values (`ridge_probabilities`): the same
predictions, with the margin kept. They are not calibrated (temperature 1); a blend's gate fits
each member's temperature out of fold (pipeline.models.blend).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import RidgeClassifierCV
from sklearn.preprocessing import LabelBinarizer, StandardScaler

ALPHAS = tuple(np.logspace(-3, 3, 10))  # aeon's grid for the ridge of MultiRocket-Hydra
MULTIROCKET_MIN_STEPS = 10  # MultiRocket also reads the first differences, which need 9 steps


def ridge_probabilities(scores: np.ndarray) -> np.ndarray:
    """A ridge classifier's decision values -> (n, classes) softmax probabilities, in the order of
    its classes_ (two classes give one score s, for the second class: they become (-s, s))."""
    scores = np.asarray(scores, dtype=np.float64)
    return softmax(np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores, axis=1)


class SoftmaxRidgeClassifierCV(RidgeClassifierCV):
    """scikit-learn's `RidgeClassifierCV` with `predict_proba`: the softmax of its decision values, so
    that aeon's MiniRocket (which uses an estimator's own probabilities where it has them) keeps
    its ridge's margins instead of one-hot votes."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return ridge_probabilities(self.decision_function(features))


class GramRidgeClassifier(ClassifierMixin, BaseEstimator):
    """`sklearn.linear_model.RidgeClassifierCV(alphas)` with leave-one-out alpha choice, fitted in
    its dual: memory grows with the series squared, not with a float64 copy of the features.

    `fit` takes float32 features (n, d) and reads them in column blocks of `block` features."""

    def __init__(self, alphas: tuple[float, ...] = ALPHAS, block: int = 4096):
        self.alphas, self.block = alphas, block

    def _column_blocks(self, features: np.ndarray):
        """Centered float64 column blocks of the features, with their column slice."""
        for start in range(0, features.shape[1], self.block):
            columns = slice(start, start + self.block)
            yield columns, features[:, columns].astype(np.float64) - self.feature_means_[columns]

    def fit(self, features: np.ndarray, labels: np.ndarray) -> GramRidgeClassifier:
        self.binarizer_ = LabelBinarizer(pos_label=1, neg_label=-1)
        targets = self.binarizer_.fit_transform(labels).astype(np.float64)
        self.classes_ = self.binarizer_.classes_
        count = len(features)
        self.feature_means_ = features.mean(0, dtype=np.float64)
        target_means = targets.mean(0)
        gram = np.zeros((count, count))
        for _, block in self._column_blocks(features):
            gram += block @ block.T
        eigenvalues, vectors = np.linalg.eigh(gram)
        del gram
        projected_targets = vectors.T @ (targets - target_means)
        projected_ones = vectors.sum(0)
        squared_vectors = vectors**2
        best_score, best_alpha, best_dual = -np.inf, None, None
        for alpha in self.alphas:
            inverse = 1.0 / (eigenvalues + alpha)
            dual = vectors @ (inverse[:, None] * projected_targets)
            # the diagonal of the leave-one-out hat matrix, corrected for the unpenalized intercept
            diagonal = squared_vectors @ inverse - (vectors @ (inverse * projected_ones)) / count
            score = -np.mean((dual / diagonal[:, None]) ** 2)
            if score > best_score:
                best_score, best_alpha, best_dual = score, float(alpha), dual
        self.alpha_, self.best_score_ = best_alpha, best_score
        self.coef_ = np.zeros((features.shape[1], targets.shape[1]))
        for columns, block in self._column_blocks(features):
            self.coef_[columns] = block.T @ best_dual
        self.intercept_ = target_means - self.feature_means_ @ self.coef_
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        scores = np.asarray(features, dtype=np.float64) @ self.coef_ + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, features: np.ndarray) -> np.ndarray:
        scores = self.decision_function(features)
        indices = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)
        return self.classes_[indices]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return ridge_probabilities(self.decision_function(features))


class MultiRocketHydra(ClassifierMixin, BaseEstimator):
    """aeon's MultiRocket-Hydra classifier on aeon's (n, channels, time) layout, made in batches of
    `batch_size` series in float32 and fitted with `GramRidgeClassifier`; its probabilities are the
    softmax of the ridge's decision values (aeon's are one-hot)."""

    def __init__(self, random_state: int = 0, batch_size: int = 2000, n_jobs: int = -1):
        self.random_state, self.batch_size, self.n_jobs = random_state, batch_size, n_jobs

    def _features(self, series: np.ndarray, fitting: bool = False) -> np.ndarray:
        """Scaled float32 features (n, 4,096 + 49,728), transformed batch by batch."""
        import torch

        parts = []
        for start in range(0, len(series), self.batch_size):
            batch = np.asarray(series[start : start + self.batch_size], dtype=np.float64)
            parts.append(
                (
                    np.asarray(self.hydra_.transform(batch), dtype=np.float32),
                    np.asarray(self.multirocket_.transform(batch), dtype=np.float32),
                )
            )
        hydra = torch.from_numpy(np.concatenate([part[0] for part in parts]))
        multirocket = np.concatenate([part[1] for part in parts])
        del parts
        if fitting:
            self.hydra_scaler_.fit(hydra)
            self.multirocket_scaler_.fit(multirocket)
        hydra = self.hydra_scaler_.transform(hydra).numpy().astype(np.float32)
        multirocket = self.multirocket_scaler_.transform(multirocket)  # in place: copy=False keeps float32
        return np.concatenate([hydra, multirocket], axis=1)

    def fit(self, series: np.ndarray, labels: np.ndarray) -> MultiRocketHydra:
        # aeon's own pieces, as its MultiRocketHydraClassifier puts them together (aeon 1.6; the
        # sparse scaler of Hydra's features is private there, and its code is 15 lines of torch)
        from aeon.classification.convolution_based._hydra import _SparseScaler
        from aeon.transformations.collection.convolution_based import HydraTransformer, MultiRocket

        series = np.asarray(series, dtype=np.float64)
        self.hydra_ = HydraTransformer(n_jobs=self.n_jobs, random_state=self.random_state).fit(series)
        self.multirocket_ = MultiRocket(n_jobs=self.n_jobs, random_state=self.random_state).fit(series)
        self.hydra_scaler_, self.multirocket_scaler_ = _SparseScaler(), StandardScaler(copy=False)
        self.ridge_ = GramRidgeClassifier().fit(self._features(series, fitting=True), labels)
        self.classes_ = self.ridge_.classes_
        return self

    def _batched(self, method: str, series: np.ndarray) -> np.ndarray:
        """The ridge's `method` on the features of `series`, made batch by batch."""
        return np.concatenate(
            [
                getattr(self.ridge_, method)(self._features(series[start : start + self.batch_size]))
                for start in range(0, len(series), self.batch_size)
            ]
        )

    def predict(self, series: np.ndarray) -> np.ndarray:
        return self._batched("predict", series)

    def predict_proba(self, series: np.ndarray) -> np.ndarray:
        return self._batched("predict_proba", series)
