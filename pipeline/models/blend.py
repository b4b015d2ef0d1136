"""A noise-aware blend: member probabilities weighted by how noisy each series looks.

A fixed blend weight cannot serve both ends of the noise range: MiniRocket or logistic regression
are ahead of the recurrent models on clean series and collapse at high noise, where the recurrent
model with its noise layer holds (docs/findings.md). The competitions' test noise is white and the
signals are smooth, so each series' own noise level is estimated from its second differences
(`NoiseLevelEstimator`, fitted on the clean training series), and the gate turns that level into
member weights:

    p = sum_m w_m(level) q_m,   w(level) = softmax_m(sum_j c_mj B_j(level)),  c_0j = 0,
    q_m = softmax(k_m log p_m)   (member m at temperature 1 / k_m)

B_j are `level_basis`'s quadratic B-splines over the levels the gate is fitted at, so a member's
weight can hold up to 0.75 and fall by 1.0, as MiniRocket's accuracy does on raw. All numbers
((M - 1) x 5 + M) are fitted together by maximum likelihood (L-BFGS, a small ridge penalty) on
series that the members neither trained nor chose on, noised at every level of `GATE_LEVELS`: in
`make blend`, the out-of-fold predictions of the other folds, so the fold's scored series chose
nothing (pipeline/stages/blend.py).

The temperatures matter because members' probabilities are not alike: a ridge's softmax scores
(MiniRocket's, pipeline.models.rocket) are far too soft, one-hot votes far too sure, and a linear
pool weighs an uncalibrated member by its calibration, not by its accuracy. Until 2026-12-06 the
gate had neither temperatures nor splines (w = softmax(a_m + b_m level), aeon's one-hot votes): it
gave MiniRocket 0.12-0.20 of the weight at noise 0.5 on raw, where MiniRocket is ahead on every
fold (docs/training.md has both measurements).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import logsumexp, softmax
from sklearn.preprocessing import SplineTransformer

from pipeline.data.signals import NoiseLevelEstimator, add_noise

# the levels the gate sees each held-out series at (units of the clean-train std): the range a test
# file may hold, from clean to past the competitions' 0.5 and the noise curve's 1.5
GATE_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
PENALTY = 1e-3  # ridge on the gate's numbers: with one member far ahead everywhere they stay finite
FLOOR = 1e-6  # the least probability a member gives: one sure and wrong costs a finite loss
LOG_SHARPNESS_BOUNDS = (-5.0, 4.0)  # temperatures from 1/55 to 150: the calibrated probabilities stay above 0
KNOTS = 4  # the spline's knots over GATE_LEVELS' range: 5 quadratic pieces, one per 0.375 of noise


def level_basis(levels: np.ndarray) -> np.ndarray:
    """(n,) estimated levels -> (n, 5) quadratic B-splines over [0, max GATE_LEVELS] (levels beyond
    it are clipped: the gate keeps its weights at the last level it was fitted at)."""
    spline = SplineTransformer(n_knots=KNOTS, degree=2).fit(np.array([[GATE_LEVELS[0]], [GATE_LEVELS[-1]]]))
    return spline.transform(np.clip(np.asarray(levels, np.float64), GATE_LEVELS[0], GATE_LEVELS[-1])[:, None])


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probabilities, FLOOR))


@dataclass
class NoiseGate:
    """Member weights from each series' estimated noise level (the first member is the reference),
    and each member's temperature."""

    coefficients: np.ndarray  # (M, basis functions): each member's weight logit on level_basis, the first 0
    sharpness: np.ndarray  # (M,) k_m, each member's 1 / temperature

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A gate pickled before 2026-12-06 (a_m + b_m level, no temperatures) reads as it was fitted."""
        if "intercepts" in state:
            state = {
                "coefficients": np.stack([state["intercepts"], state["slopes"]], axis=1),
                "sharpness": np.ones(len(state["intercepts"])),
            }
        self.__dict__.update(state)

    def logits(self, levels: np.ndarray) -> np.ndarray:
        levels = np.asarray(levels, np.float64)
        if self.coefficients.shape[1] == 2:  # a gate of before 2026-12-06: linear in the level
            return self.coefficients[None, :, 0] + self.coefficients[None, :, 1] * levels[:, None]
        return level_basis(levels) @ self.coefficients.T

    def weights(self, levels: np.ndarray) -> np.ndarray:
        """(n, M): each series' member weights, summing to 1."""
        return softmax(self.logits(levels), axis=1)

    def calibrated(self, probabilities: list[np.ndarray]) -> list[np.ndarray]:
        """Each member's (n, C) probabilities at its fitted temperature."""
        return [softmax(k * log_probabilities(p), axis=1) for k, p in zip(self.sharpness, probabilities)]

    def blend(self, probabilities: list[np.ndarray], levels: np.ndarray) -> np.ndarray:
        """(n, C): the weighted mean of the members' calibrated (n, C) probabilities."""
        return np.einsum("nm,nmc->nc", self.weights(levels), np.stack(self.calibrated(probabilities), axis=1))


def own_loss(logs: np.ndarray, true_logs: np.ndarray, log_sharpness: float) -> float:
    """One member's mean negative log-likelihood at sharpness exp(log_sharpness): (n, C) log
    probabilities, (n,) those of the true class."""
    sharpness = np.exp(log_sharpness)
    return float((logsumexp(sharpness * logs, axis=1) - sharpness * true_logs).mean())


def fit_gate(probabilities: list[np.ndarray], labels: np.ndarray, levels: np.ndarray) -> NoiseGate:
    """The gate, with each member's temperature, of largest likelihood of `labels` (class indices)
    under the blend of `probabilities` (each member's (n, C)) on series of estimated noise `levels`."""
    members = len(probabilities)
    if members < 2:
        raise ValueError("a blend needs two members or more")
    logs = np.stack([log_probabilities(member) for member in probabilities], axis=1)  # (n, M, C)
    rows = np.arange(len(labels))
    true_logs = logs[rows, :, labels]  # (n, M)
    basis = level_basis(levels)  # (n, J)
    gating = (members - 1) * basis.shape[1]

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coefficients = np.vstack([np.zeros(basis.shape[1]), theta[:gating].reshape(members - 1, -1)])
        return coefficients, np.exp(theta[gating:])

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coefficients, sharpness = unpack(theta)
        calibrated = softmax(sharpness[None, :, None] * logs, axis=2)  # (n, M, C)
        true_class = calibrated[rows, :, labels]  # (n, M)
        weights = softmax(basis @ coefficients.T, axis=1)
        blended = (weights * true_class).sum(axis=1)
        # d(-log blended)/d logit_m = w_m - r_m, with r_m = w_m q_m / blended each member's responsibility
        responsibility = weights * true_class / blended[:, None]
        by_logit = (weights - responsibility) / len(labels)
        # d log q_m / d log k_m = k_m (log p_m,true - E_q[log p_m])
        by_log_sharpness = -(responsibility * sharpness[None, :] * (true_logs - (calibrated * logs).sum(axis=2))).sum(
            axis=0
        ) / len(labels)
        gradient = np.concatenate([(by_logit.T @ basis)[1:].ravel(), by_log_sharpness])
        loss = -np.log(blended).mean() + PENALTY * float(theta @ theta)
        return float(loss), gradient + 2 * PENALTY * theta

    def fit(start: np.ndarray, sharpness_bounds: tuple[float, float] = LOG_SHARPNESS_BOUNDS) -> Any:
        bounds = [(None, None)] * gating + [sharpness_bounds] * members
        return minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds)

    # The likelihood is not convex in weights and temperatures together, so two starts, the better
    # kept: the weights fitted at temperature 1 (a member right only at some levels gets its weight
    # there before any temperature can flatten it), and each member's own temperature (a convex fit
    # of one number: one-hot votes sit where the likelihood is flat in the temperature, so from 1
    # they cannot move).
    own = [
        minimize_scalar(
            lambda log_k, m=m: own_loss(logs[:, m], true_logs[:, m], log_k),
            bounds=LOG_SHARPNESS_BOUNDS,
            method="bounded",
        ).x
        for m in range(members)
    ]
    weights_first = fit(np.zeros(gating + members), sharpness_bounds=(0.0, 0.0)).x
    result = min((fit(weights_first), fit(np.concatenate([np.zeros(gating), own]))), key=lambda fitted: fitted.fun)
    return NoiseGate(*unpack(result.x))


def gate_training_set(
    series: np.ndarray, labels: np.ndarray, profile: str, unit: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series, labels, true levels): every series once at each of GATE_LEVELS, one noise draw each."""
    noised = [add_noise(series, profile, level, unit, seed + index) for index, level in enumerate(GATE_LEVELS)]
    levels = np.repeat(np.array(GATE_LEVELS), len(series))
    return np.concatenate(noised), np.tile(labels, len(GATE_LEVELS)), levels


def member_probabilities(members: list[Any], series: np.ndarray, batch_size: int | None = None) -> list[np.ndarray]:
    """Each member's (n, C) probabilities, by its Keras-style `predict`."""
    return [np.asarray(member.predict(series, batch_size=batch_size, verbose=0)) for member in members]


@dataclass
class BlendModel:
    """Members with Keras' `predict(series, batch_size, verbose)` (a recurrent run's model, a peer's
    `baselines.ProbabilityModel`) blended by a `NoiseGate` on each series' estimated noise level."""

    members: list[Any]
    names: list[str]  # what each member is: a run id or peer:<name>[+copies]
    gate: NoiseGate
    estimator: NoiseLevelEstimator
    keras_members: list[int] = field(default_factory=list)  # which members are Keras models (not pickled)

    def predict(self, series: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        return self.gate.blend(member_probabilities(self.members, series, batch_size), self.estimator.levels(series))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its Keras members: they stay in their own run folders (see `with_keras_members`)."""
        state = dict(self.__dict__)
        state["members"] = [None if index in self.keras_members else m for index, m in enumerate(self.members)]
        return state

    def with_keras_members(self, loaded: dict[int, Any]) -> BlendModel:
        """The blend with its Keras members put back (by member index), after unpickling."""
        members = [loaded.get(index, member) for index, member in enumerate(self.members)]
        return BlendModel(members, self.names, self.gate, self.estimator, self.keras_members)
