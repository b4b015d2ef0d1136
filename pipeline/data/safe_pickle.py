"""Read the HAPT recordings pickled by an old pandas, without trusting the pickle.

`pickle.load` runs any callable a pickle names, so an unrestricted load of a
downloaded file is code execution. This unpickler allows only the few globals
the file needs (NumPy array reconstruction, `codecs.encode` for latin-1 bytes,
`slice`, `object`), maps pandas' classes to inert stand-ins that only record
their state, and rebuilds plain DataFrames from the pickled block arrays.
Any other global is refused.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
from numpy._core.multiarray import _reconstruct as numpy_reconstruct


class _Recorded:
    """Stand-in for a pandas object: keeps the constructor arguments and the pickled state."""

    kind = ""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Frame(_Recorded):
    kind = "DataFrame"


class _BlockManager(_Recorded):
    kind = "BlockManager"


class _IndexClass(_Recorded):
    kind = "Index"


class _RangeIndexClass(_Recorded):
    kind = "RangeIndex"


class _NewIndex(_Recorded):
    """What `pandas.core.indexes.base._new_Index(cls, d)` would have built."""

    kind = "new_Index"


def _reconstructor(cls: type, base: type, state: Any) -> _Recorded:
    """copy_reg._reconstructor, limited to our stand-ins (a pickle cannot smuggle in another class)."""
    if not (isinstance(cls, type) and issubclass(cls, _Recorded)) or base is not object or state is not None:
        raise pickle.UnpicklingError("copy_reg._reconstructor is allowed only for pandas frames")
    return cls()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """_codecs.encode as Python 2 pickles use it: str -> bytes in latin-1, nothing else."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin1 text")
    return codecs.encode(text, "latin1")


def _numpy_reconstruct(cls: type, shape: Any, dtype: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("numpy _reconstruct is allowed only for numpy.ndarray")
    return numpy_reconstruct(cls, shape, dtype)


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("pandas.core.frame", "DataFrame"): _Frame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "_new_Index"): _NewIndex,
    ("pandas.core.indexes.base", "Index"): _IndexClass,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndexClass,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only ALLOWED_GLOBALS and refuses every other name."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: not in the allowed list") from None


def _index_values(index: Any) -> list[Any]:
    if not isinstance(index, _NewIndex) or len(index.args) != 2:
        raise pickle.UnpicklingError("unexpected index object in the pickled frame")
    cls, fields = index.args
    if cls is _RangeIndexClass:
        return list(range(fields["start"], fields["stop"], fields.get("step", 1)))
    if cls is _IndexClass:
        return list(fields["data"])
    raise pickle.UnpicklingError("unexpected index class in the pickled frame")


def _rebuild_frame(frame: Any) -> pd.DataFrame:
    """Turn a recorded DataFrame (pandas 0.14.1+ block layout) into a real one."""
    if not isinstance(frame, _Frame) or not isinstance(frame.state, dict):
        raise pickle.UnpicklingError("expected a pickled DataFrame")
    manager = frame.state.get("_data")
    if not isinstance(manager, _BlockManager) or not isinstance(manager.state, tuple):
        raise pickle.UnpicklingError("expected a pickled BlockManager")
    layout = manager.state[-1].get("0.14.1") if isinstance(manager.state[-1], dict) else None
    if layout is None:
        raise pickle.UnpicklingError("unsupported pandas block layout (expected 0.14.1)")
    columns, index = (_index_values(axis) for axis in layout["axes"])
    data: dict[Any, np.ndarray] = {}
    for block in layout["blocks"]:
        positions = range(len(columns))[block["mgr_locs"]]
        for row, position in enumerate(positions):
            data[columns[position]] = block["values"][row]
    return pd.DataFrame({column: data[column] for column in columns}, index=index)


def restricted_load(stream: BinaryIO) -> Any:
    """Unpickle with RestrictedUnpickler (latin-1 for Python 2 byte strings)."""
    return RestrictedUnpickler(stream, encoding="latin1").load()


def load_hapt_pickle(path: Path) -> dict[int, list[pd.DataFrame]]:
    """Read HAPT.pkl.gz: {user_id: [one DataFrame per experiment]} with acc-*, gyro-*, sequence, label."""
    with gzip.open(path, "rb") as handle:
        raw = io.BytesIO(handle.read())
    content = restricted_load(raw)
    if not isinstance(content, dict):
        raise pickle.UnpicklingError(f"{path}: expected a dict of users, got {type(content).__name__}")
    return {int(user): [_rebuild_frame(frame) for frame in frames] for user, frames in content.items()}
