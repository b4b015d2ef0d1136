"""Small file helpers shared by every stage: atomic writes and checksums.

A stage never leaves a half-written artifact: it writes to a temp path beside
the target and renames it into place only when everything succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def short_hash(content: Any, length: int = 8, default: Callable[[Any], Any] | None = None) -> str:
    """The first `length` hex digits of the SHA-256 of `content` as sorted JSON: the short, stable
    fingerprint of a config in run ids, selection definitions and study bases."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=default).encode()).hexdigest()[:length]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_folders(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """Temp folders for several targets that must change together: nothing is replaced until every
    one is complete, then they are swapped in, in the order given (put the one readers look for last).
    A swap is two renames (the old folder aside, the new one in) and the old folder is deleted only
    after: a process killed while deleting a large folder never leaves a half-deleted target."""
    temps: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            restore_interrupted_swap(target)
            temps.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)))
        yield tuple(temps)
        for temp, target in zip(temps, targets):
            aside = previous_of(target)
            shutil.rmtree(aside, ignore_errors=True)  # a copy kept aside by a swap that finished
            if target.exists():
                target.rename(aside)
            temp.rename(target)
        for target in targets:
            shutil.rmtree(previous_of(target), ignore_errors=True)
    except BaseException:
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
        raise


def previous_of(target: Path) -> Path:
    """Where a swap puts the folder it replaces until the new one is in place."""
    return target.with_name(f".{target.name}.previous")


def tidy_interrupted(target: Path) -> None:
    """What a killed writer of `target` left beside it: the old folder put back if the swap stopped
    between its renames, then every temp and aside copy removed. Only under a lock that keeps other
    writers of `target` out (their temps look the same)."""
    restore_interrupted_swap(target)
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)


def restore_interrupted_swap(target: Path) -> None:
    """A process killed between a swap's two renames left the old folder aside and none in place: put it back."""
    if not target.exists() and previous_of(target).is_dir():
        previous_of(target).rename(target)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it replaces `target`, on error it is removed."""
    with atomic_folders(target) as (temp,):
        yield temp


@contextmanager
def atomic_files(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """Temp paths beside several files that belong together: none is replaced until every one is
    written, then they are renamed into place in the order given (put the one readers look for last)."""
    temps: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            os.close(handle)
            temps.append(Path(name))
        yield tuple(temps)
        for temp, target in zip(temps, targets):
            temp.replace(target)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target`, on error it is removed."""
    with atomic_files(target) as (temp,):
        yield temp


def write_json_atomic(path: Path, content: object) -> None:
    with atomic_file(path) as temp:
        temp.write_text(json.dumps(content, indent=2, default=str) + "\n")


def write_csv_atomic(path: Path, table: pd.DataFrame, **kwargs: object) -> None:
    with atomic_file(path) as temp:
        table.to_csv(temp, **kwargs)


def make_read_only(folder: Path) -> None:
    """Make every file below `folder` read-only: raw data are immutable once written."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o444)
