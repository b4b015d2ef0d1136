"""The shared shape of every stage's command line: `--exp`, `--set`, one-line errors, exit codes.

Each stage's `main()` builds its parser with `stage_parser`, adds what is its own, and hands the
work and its parsed arguments to `run_stage`, which loads the config (one place, not one copy per
stage). Errors the user can fix (a `UserError`: ConfigError, DataError, BackendError, TrainingError,
...; or a file that is missing or not readable) print as `error: <one line>` on stderr with exit
code 1. Anything else is a bug: it keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pipeline.config import load_config, split_overrides
from pipeline.errors import UserError

# File problems the user fixes by making or pointing at the right file; other OSErrors (a full
# disk, a broken pipe) are not the user's input and keep their traceback.
FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def stage_parser(module: str, doc: str, default_experiment: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.strip().splitlines()[0])
    parser.add_argument("--exp", default=default_experiment, help="experiment TOML file (experiments/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. regularization.l2=1e-3 (repeatable)",
    )
    parser.add_argument(
        "--sets",
        default="",
        metavar="'KEY=VALUE KEY=VALUE'",
        help="several overrides in one string, as make's SET= passes them (values may hold spaces: data.validation_subjects=[1, 2])",
    )
    return parser


def overrides(args: argparse.Namespace) -> list[str]:
    """Every override of the command line, in order: `--sets` first, then each `--set`."""
    return [*split_overrides(args.sets), *args.set]


def run_stage(
    action: Callable[..., object],
    args: argparse.Namespace | None = None,
    keras: bool = False,
    extra: Sequence[str] = (),
) -> int:
    """Run a stage; 0 on success, 1 with a one-line error on input the user can fix. With the stage's
    parsed `args`, the config is loaded here (its experiment, then the overrides, then `extra`) and
    handed to `action`; without them `action` takes nothing. `keras`: import it first (quietly)."""
    try:
        if keras:
            from pipeline.runtime import import_keras

            import_keras()
        if args is None:
            action()
        else:
            action(load_config(args.exp, [*overrides(args), *extra]))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except FILE_ERRORS as error:
        print(f"error: {error.filename or ''}: {error.strerror or error}".lstrip(": "), file=sys.stderr)
        return 1
    return 0
