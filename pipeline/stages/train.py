"""Stage 3, `make train [EXP=experiments/<name>.toml] [MODEL=...] [SET=...]`: a competition -> runs/<run_id>/.

One run (pipeline/runs/training.py; a run folder's files are listed in pipeline/runs/folder.py), or, for a competition
too small to validate on, a cross-validation (pipeline/stages/cv.py). This dispatch sits above both,
so that cv can train its folds with the training module without importing this stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.datasets import open_competition, too_small_to_validate
from pipeline.log import log
from pipeline.runs.training import train
from pipeline.stages.cv import cross_validate


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.train", __doc__)
    parser.add_argument(
        "--force", action="store_true", help="train again even if this config already has a finished run"
    )
    args = parser.parse_args(argv)
    return run_stage(
        lambda config: train_or_cross_validate(config, Path(args.exp).stem if args.exp else "", args.force),
        args,
        keras=True,
    )


def train_or_cross_validate(config: Config, experiment: str, force: bool) -> Path:
    """`make train`: one run, or, for a competition too small to validate on (a validation split or
    held-out fold under cv.min_validation series), a cross-validation: every labeled series is then
    validated on once, and `make predict` averages the fold models."""
    competition = open_competition(config)
    if too_small_to_validate(config, competition):
        held_out = len(competition.validation) if competition.validation is not None else "a fold of"
        log.info(
            f"{config.data.competition}: {held_out} validation series are too few to choose a checkpoint on (cv.min_validation={config.cv.min_validation}): "
            f"cross-validating over {config.cv.folds} folds instead (make predict then averages the fold models)",
        )
        return cross_validate(config, experiment, force=force)
    return train(config, experiment=experiment, force=force)


if __name__ == "__main__":
    sys.exit(main())
