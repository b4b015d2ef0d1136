"""MultiRocket-Hydra in bounded memory (pipeline.models.rocket): the same ridge as scikit-learn's,
the same predictions as aeon's classifier, the ridges' softmax probabilities, and the peak-memory
meter `make peers` reports with."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.linear_model import RidgeClassifierCV

from pipeline.models import baselines
from pipeline.models.rocket import ALPHAS, GramRidgeClassifier, MultiRocketHydra, ridge_probabilities
from pipeline.runtime import PeakMemory


@pytest.mark.parametrize("classes", [2, 4])
def test_the_gram_ridge_is_scikit_learns_leave_one_out_ridge(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 50)
    features = (rng.normal(size=(50, 300)) + 3.0).astype(np.float32)  # more features than series
    features[:, :6] += labels[:, None]
    reference = RidgeClassifierCV(alphas=np.array(ALPHAS)).fit(features.astype(np.float64), labels)
    ours = GramRidgeClassifier(block=64).fit(features, labels)  # five column blocks, the last one short
    assert ours.alpha_ == reference.alpha_ and ours.best_score_ == pytest.approx(reference.best_score_, rel=1e-9)
    np.testing.assert_allclose(ours.coef_, reference.coef_.T.reshape(ours.coef_.shape), atol=1e-10)
    unseen = rng.normal(size=(30, 300)).astype(np.float32)
    np.testing.assert_allclose(ours.decision_function(unseen), reference.decision_function(unseen), atol=1e-10)
    np.testing.assert_array_equal(ours.predict(unseen), reference.predict(unseen))


def test_multirocket_hydra_in_batches_predicts_what_aeons_classifier_predicts():
    from aeon.classification.convolution_based import MultiRocketHydraClassifier

    rng = np.random.default_rng(0)
    labels = np.repeat(np.array([3, 5, 8]), 20)
    series = rng.normal(size=(60, 2, 16)) + 0.4 * np.sin(np.arange(16) * labels[:, None, None] / 4)
    ours = MultiRocketHydra(random_state=1, batch_size=25).fit(series, labels)  # three batches
    reference = MultiRocketHydraClassifier(random_state=1).fit(series, labels)
    unseen = rng.normal(size=(40, 2, 16)) + 0.4 * np.sin(np.arange(16) * np.repeat([3, 5, 8], 14)[:40, None, None] / 4)
    np.testing.assert_array_equal(ours.predict(unseen), reference.predict(unseen))
    assert ours.ridge_.alpha_ == reference.classifier.alpha_
    probabilities = ours.predict_proba(unseen)
    np.testing.assert_allclose(probabilities.sum(1), 1)
    assert (ours.classes_[probabilities.argmax(1)] == ours.predict(unseen)).all()
    # the ridge's margins, not aeon's one-hot votes: the softmax of its decision values
    assert len(np.unique(probabilities.max(1).round(6))) > 10 and probabilities.max() < 1


def test_minirocket_gives_its_ridges_softmax_and_predicts_what_aeons_classifier_predicts():
    """aeon's MiniRocket with our ridge (scikit-learn's with predict_proba) is aeon's MiniRocket: the
    same predictions, with probabilities that keep the ridge's margin instead of one-hot votes."""
    from aeon.classification.convolution_based import MiniRocketClassifier

    rng = np.random.default_rng(2)
    labels = np.repeat(np.array([0, 1, 2]), 15)
    series = rng.normal(size=(45, 12, 2)) + 0.5 * np.sin(np.arange(12)[None, :, None] * (labels[:, None, None] + 1) / 3)
    ours = baselines.make_peer("minirocket", seed=1).fit(series, labels)
    reference = MiniRocketClassifier(random_state=1, n_jobs=1).fit(baselines.channels_first(series), labels)
    unseen = rng.normal(size=(30, 12, 2)) + 0.5 * np.sin(
        np.arange(12)[None, :, None] * (labels[:30, None, None] + 1) / 3
    )
    np.testing.assert_array_equal(ours.predict(unseen), reference.predict(baselines.channels_first(unseen)))
    probabilities = baselines.ProbabilityModel(ours, 3).predict(unseen)
    ridge = ours[-1].pipeline_
    np.testing.assert_allclose(
        probabilities, softmax(ridge.decision_function(baselines.channels_first(unseen)), axis=1), atol=1e-6
    )
    assert (probabilities.argmax(1) == ours.predict(unseen)).all() and probabilities.max() < 1


def test_two_class_ridge_probabilities_follow_its_one_score():
    scores = np.array([-2.0, 0.0, 0.5])
    probabilities = ridge_probabilities(scores)
    np.testing.assert_allclose(probabilities, softmax(np.stack([-scores, scores], 1), axis=1))
    np.testing.assert_array_equal(probabilities.argmax(1), (scores > 0).astype(int))


def test_every_peer_reads_the_classroom_five_steps():
    """MiniRocket needs 9 steps and MultiRocket 10: the 5 of the classroom are zero-padded for them."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    series = rng.normal(size=(36, 5, 3)) + labels[:, None, None]
    for name in ("multirocket_hydra", "quant"):
        model = baselines.ProbabilityModel(baselines.make_peer(name).fit(series, labels), 3)
        assert (model.predict(series).argmax(1) == labels).mean() > 0.9, name


def test_peak_memory_is_measured_block_by_block():
    with PeakMemory() as large:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        del block
    with PeakMemory() as small:
        np.ones(1000).sum()
    assert large.gib is not None and small.gib is not None
    assert large.gib - small.gib > 0.25  # the second block's peak was reset, not the process's maximum
