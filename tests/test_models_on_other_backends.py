"""The model and augmentation tests again on another Keras backend, in a child pytest: a file of its
own so that another test worker can take it beside the rest of tests/test_backends.py."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import on_backend

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("backend", "files"),
    [("jax", ["tests/test_models.py", "tests/test_augment.py"]), ("torch", ["tests/test_augment.py"])],
)
def test_the_model_and_augmentation_tests_pass_on_another_backend(backend: str, files: list[str]):
    """The model tests (each model learns, saves, reloads in a fresh process) run again on JAX, on the
    128x9 windows and the models with layers or cells of their own: the deep-transition cell, additive
    attention, the seq2seq decoder (the others, bilstm and cnn_lstm included, are Keras' own LSTM, GRU,
    Conv1D and Dense stacks around the same input layers); the augmentation layers on JAX and PyTorch
    (PyTorch's model path: tests/test_backends.py)."""
    result = on_backend(
        backend,
        sys.executable,
        "-m",
        "pytest",
        *files,
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        # The fixed-context reverse task and the exhaustive beam check test decoding logic that does
        # not depend on the backend (the attention reverse task and END/max-length decoding run here), and
        # the front end, wide path, pooling, regularizers, noise and dropout are Keras' own layers (the
        # statistics branch, a layer of ours, runs here).
        "-k",
        "not fixed_context and not exhaustive and not front_end and not pooling and not regularizers_reach"
        " and not noise_and_dropout",
        timeout=900,
        HAR_TEST_SHAPES="128x9",
        HAR_TEST_MODELS="deep_transition,attention,seq2seq",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.strip().splitlines()[-1] and " failed" not in result.stdout
