"""The shared shape of every stage's command line: `--exp`, `--set`, one-line errors, exit codes.

Each stage's `main()` builds its parser with `stage_parser`, adds what is its own, and hands the
work to `run_stage`, which turns a bad input (ValueError, including ConfigError and DataError) or
a file problem (OSError) into `error: <one line>` on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def stage_parser(module: str, doc: str, default_experiment: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.strip().splitlines()[0])
    parser.add_argument("--exp", default=default_experiment, help="experiment TOML file (experiments/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. regularization.l2=1e-3 (repeatable)")
    return parser


def run_stage(action: Callable[[], object], keras: bool = False) -> int:
    """Run a stage; 0 on success, 1 with a one-line error on bad input. `keras`: import it first (quietly)."""
    try:
        if keras:
            from pipeline.runtime import import_keras

            import_keras()
        action()
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
