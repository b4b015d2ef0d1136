"""A noise-aware blend: member probabilities weighted by how noisy each series looks.

A fixed blend weight cannot serve both ends of the noise range: MiniRocket or logistic regression
are ahead of the recurrent models on clean series and collapse at high noise, where the recurrent
model with its noise layer holds (docs/findings.md). The competitions' test noise is white and the
signals are smooth, so each series' own noise level is estimated from its second differences
(`NoiseLevelEstimator`, fitted on the clean training series), and the gate turns that level into
member weights:

    w(series) = softmax_m(a_m + b_m * level(series)),  a_0 = b_0 = 0,  p = sum_m w_m p_m

The 2 (M - 1) numbers are fitted by maximum likelihood (L-BFGS, a small ridge penalty) on series
that their members neither trained nor chose on, noised at every level of `GATE_LEVELS`: in `make
blend`, the out-of-fold predictions of the other folds, so the fold's scored series chose nothing
(pipeline/stages/blend.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax

from pipeline.data.signals import NoiseLevelEstimator, add_noise

# the levels the gate sees each held-out series at (units of the clean-train std): the range a test
# file may hold, from clean to past the competitions' 0.5 and the noise curve's 1.5
GATE_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
PENALTY = 1e-3  # ridge on the gate's numbers: with one member far ahead everywhere they stay finite


@dataclass
class NoiseGate:
    """Member weights from each series' estimated noise level (the first member is the reference)."""

    intercepts: np.ndarray  # (M,), the first 0
    slopes: np.ndarray  # (M,), the first 0

    def weights(self, levels: np.ndarray) -> np.ndarray:
        """(n, M): each series' member weights, summing to 1."""
        return softmax(self.intercepts[None, :] + self.slopes[None, :] * np.asarray(levels)[:, None], axis=1)

    def blend(self, probabilities: list[np.ndarray], levels: np.ndarray) -> np.ndarray:
        """(n, C): the weighted mean of the members' (n, C) probabilities."""
        return np.einsum("nm,nmc->nc", self.weights(levels), np.stack(probabilities, axis=1))


def fit_gate(probabilities: list[np.ndarray], labels: np.ndarray, levels: np.ndarray) -> NoiseGate:
    """The gate of largest likelihood of `labels` (class indices) under the blend of `probabilities`
    (each member's (n, C)) on series of estimated noise `levels`."""
    members = len(probabilities)
    if members < 2:
        raise ValueError("a blend needs two members or more")
    # each member's probability of the true class, floored so that a member sure and wrong costs a finite loss
    true_class = np.stack([member[np.arange(len(labels)), labels] for member in probabilities], axis=1)
    true_class = np.maximum(true_class, 1e-6)
    levels = np.asarray(levels, np.float64)

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([[0.0], theta[: members - 1]]), np.concatenate([[0.0], theta[members - 1 :]])

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        intercepts, slopes = unpack(theta)
        weights = softmax(intercepts[None, :] + slopes[None, :] * levels[:, None], axis=1)
        blended = (weights * true_class).sum(axis=1)
        # d(-log blended)/d logit_m = w_m - w_m p_m / blended
        responsibility = weights * true_class / blended[:, None]
        by_logit = (weights - responsibility) / len(labels)
        gradient = np.concatenate([by_logit.sum(axis=0)[1:], (by_logit * levels[:, None]).sum(axis=0)[1:]])
        loss = -np.log(blended).mean() + PENALTY * float(theta @ theta)
        return float(loss), gradient + 2 * PENALTY * theta

    result = minimize(loss_and_gradient, np.zeros(2 * (members - 1)), jac=True, method="L-BFGS-B")
    intercepts, slopes = unpack(result.x)
    return NoiseGate(intercepts, slopes)


def gate_training_set(
    series: np.ndarray, labels: np.ndarray, profile: str, unit: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series, labels, true levels): every series once at each of GATE_LEVELS, one noise draw each."""
    noised = [add_noise(series, profile, level, unit, seed + index) for index, level in enumerate(GATE_LEVELS)]
    levels = np.repeat(np.array(GATE_LEVELS), len(series))
    return np.concatenate(noised), np.tile(labels, len(GATE_LEVELS)), levels


@dataclass
class BlendModel:
    """Members with Keras' `predict(series, batch_size, verbose)` (a recurrent run's model, a peer's
    `baselines.ProbabilityModel`) blended by a `NoiseGate` on each series' estimated noise level."""

    members: list[Any]
    names: list[str]  # what each member is: a run id or peer:<name>[+copies]
    gate: NoiseGate
    estimator: NoiseLevelEstimator
    keras_members: list[int] = field(default_factory=list)  # which members are Keras models (not pickled)

    def member_probabilities(self, series: np.ndarray, batch_size: int | None = None) -> list[np.ndarray]:
        return [np.asarray(member.predict(series, batch_size=batch_size, verbose=0)) for member in self.members]

    def predict(self, series: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        return self.gate.blend(self.member_probabilities(series, batch_size), self.estimator.levels(series))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its Keras members: they stay in their own run folders (see `with_keras_members`)."""
        state = dict(self.__dict__)
        state["members"] = [None if index in self.keras_members else m for index, m in enumerate(self.members)]
        return state

    def with_keras_members(self, loaded: dict[int, Any]) -> BlendModel:
        """The blend with its Keras members put back (by member index), after unpickling."""
        members = [loaded.get(index, member) for index, member in enumerate(self.members)]
        return BlendModel(members, self.names, self.gate, self.estimator, self.keras_members)
