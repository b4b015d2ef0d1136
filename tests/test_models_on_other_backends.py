"""The augmentation layers' and noise-consistency training's tests again on JAX and PyTorch, in a
child pytest: every test of the files runs and passes there, counted against what TensorFlow collects. The models with layers of their own
are checked on both backends by loading TensorFlow-trained files (tests/test_models.py); PyTorch's
training path by tests/test_backends.py."""

from __future__ import annotations

import re
import sys

import pytest

from tests.conftest import on_backend

pytestmark = pytest.mark.slow
FILES = ("tests/test_augment.py", "tests/test_consistency.py")


def passed_count(output: str) -> int:
    """The number of passed tests on pytest's summary line; 0 when none passed."""
    found = re.search(r"(\d+) passed", output.strip().splitlines()[-1])
    return int(found.group(1)) if found else 0


@pytest.fixture(scope="module")
def collected() -> int:
    """How many tests the file holds, as TensorFlow collects them."""
    result = on_backend(
        "tensorflow", sys.executable, "-m", "pytest", *FILES, "-q", "--collect-only", "-p", "no:cacheprovider"
    )
    assert result.returncode == 0, result.stdout[-2000:]
    found = re.search(r"(\d+) tests? collected", result.stdout)
    assert found, result.stdout[-2000:]
    return int(found.group(1))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_augmentation_test_passes_on_another_backend(backend: str, collected: int):
    result = on_backend(backend, sys.executable, "-m", "pytest", *FILES, "-q", "-p", "no:cacheprovider", timeout=500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # every test ran: none skipped, deselected or lost on this backend
    assert passed_count(result.stdout) == collected > 0, result.stdout[-1000:]
    assert " skipped" not in result.stdout.strip().splitlines()[-1]


def test_passed_count_reads_pytests_summary_line():
    assert passed_count("....\n4 passed in 2.1s") == 4
    assert passed_count("3 passed, 1 skipped in 9s") == 3
    assert passed_count("1 failed, 2 passed in 9s") == 2
    assert passed_count("no tests ran in 0.01s") == 0
