"""`har` (or `python -m pipeline`): the stages as subcommands, for users of the installed package.

    har train --exp experiments/default.toml --set model.units=32
    har config --set model.units=32    every resolved setting, where it came from, and why its default
    har --version

Each subcommand runs the module its make target runs, with that module's own options (`har <name>
--help`); make stays the front door (it installs what a target needs and passes its variables as
these options). The modules are named here as text and imported only when asked for, as make does.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import explained

PACKAGE = "har-pipeline"
# subcommand -> the module its make target runs (tests/test_cli.py checks them against the Makefile)
COMMANDS = {
    "data": "pipeline.stages.download",
    "prepare": "pipeline.stages.prepare",
    "train": "pipeline.stages.train",
    "cv": "pipeline.stages.cv",
    "cv-compare": "pipeline.stages.cv_compare",
    "ensemble": "pipeline.stages.ensemble",
    "blend": "pipeline.stages.blend",
    "predict": "pipeline.stages.predict",
    "submit": "pipeline.stages.submit",
    "evaluate": "pipeline.stages.evaluate",
    "runs": "pipeline.stages.runs",
    "ui": "pipeline.stages.ui",
    "tune": "pipeline.studies.tune",
    "compare": "pipeline.studies.compare",
    "peers": "pipeline.studies.peers",
    "noise-level": "pipeline.studies.noise_level",
    "results": "pipeline.studies.results",
    "notebooks": "pipeline.studies.notebooks",
    "transcribe": "pipeline.studies.transcribe",
    "small-competition": "pipeline.studies.small_competition",
    "recording": "pipeline.phone.recording",
    "sample-recording": "pipeline.phone.sample_recording",
    "export": "pipeline.phone.export",
    "models": "pipeline.models",
    "bench": "pipeline.perf.bench",
}


def version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "not installed"


def show_config(argv: list[str]) -> int:
    """`har config`: one line per setting: key = value, its source, and the reason for its default."""
    args = stage_parser("har config", "every resolved setting, where it came from, and why").parse_args(argv)

    def show() -> None:
        for row in explained(args.exp, overrides(args)):
            value = row["value"] if not isinstance(row["value"], tuple) else list(row["value"])
            print(f"{row['key']} = {value!r}  [{row['source']}]  {row['reason']}")

    return run_stage(show)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="har", description="noise-robust activity recognition: the pipeline's stages as subcommands"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("command", choices=["config", *COMMANDS], help="a stage (its make target's name), or config")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the stage's own options (har <command> --help)")
    args = parser.parse_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    options = argv[1:]
    if args.command == "config":
        return show_config(options)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as make sets it: TensorFlow's start-up INFO lines off
    return int(importlib.import_module(COMMANDS[args.command]).main(options) or 0)


if __name__ == "__main__":
    sys.exit(main())
