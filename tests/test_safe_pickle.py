"""The restricted unpickler reads only what HAPT.pkl.gz needs and refuses every other global."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from pipeline.data.safe_pickle import ALLOWED_GLOBALS, restricted_load


def global_pickle(module: str, name: str, argument: str = "echo pwned") -> bytes:
    """A protocol-2 pickle that calls module.name(argument), as an attacker would write it."""
    return (
        b"\x80\x02c"
        + f"{module}\n{name}\n".encode()
        + b"X"
        + len(argument).to_bytes(4, "little")
        + argument.encode()
        + b"\x85R."
    )


@pytest.mark.parametrize(
    "module, name",
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("__builtin__", "eval"),
        ("subprocess", "Popen"),
        ("numpy", "load"),
        ("pandas", "read_pickle"),
    ],
)
def test_refuses_any_other_global(module: str, name: str):
    with pytest.raises(pickle.UnpicklingError, match=f"refused global {module}.{name}"):
        restricted_load(io.BytesIO(global_pickle(module, name)))


def test_allowed_globals_cannot_be_misused():
    # _codecs.encode only turns latin1 text into bytes; any other codec is refused.
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        restricted_load(io.BytesIO(global_pickle("_codecs", "encode", "x")))  # one argument: utf-8 default
    # copy_reg._reconstructor builds only the inert stand-ins, never a real class named in the pickle.
    evil = b"\x80\x02ccopy_reg\n_reconstructor\nc__builtin__\nobject\nc__builtin__\nobject\nN\x87R."
    with pytest.raises(pickle.UnpicklingError, match="only for pandas frames"):
        restricted_load(io.BytesIO(evil))


def test_reads_plain_numpy_arrays_as_python_2_pickled_them():
    # Current numpy pickles name numpy._core; the file names numpy.core, so rewrite the module names.
    payload = pickle.dumps({"a": np.arange(5.0)}, protocol=2).replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray"
    )
    assert np.array_equal(restricted_load(io.BytesIO(payload))["a"], np.arange(5.0))


def test_allow_list_is_small():
    assert len(ALLOWED_GLOBALS) == 12
    assert not any(module in ("os", "posix", "subprocess", "builtins") for module, _ in ALLOWED_GLOBALS)
