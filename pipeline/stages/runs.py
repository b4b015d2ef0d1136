"""`make runs`: every run as one row, what was trained and how it holds up under noise (the table
and its columns: pipeline/runs/registry.py).
"""

from __future__ import annotations

import sys

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import load_config
from pipeline.runs.registry import list_runs, summary_table


def show(config_overrides: list[str], competition: str) -> None:
    runs = list_runs(load_config(None, config_overrides).path("runs"))
    if competition and len(runs):
        runs = runs[runs["competition"] == competition]
    print(
        summary_table(runs).to_markdown(index=False, floatfmt=".3f")
        if len(runs)
        else "no runs yet: `make train` makes one"
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.runs", __doc__)
    parser.add_argument("--competition", default="", help="only runs of this competition")
    args = parser.parse_args(argv)
    return run_stage(lambda: show(overrides(args), args.competition))


if __name__ == "__main__":
    sys.exit(main())
