"""Stage 3, `make train [EXP=experiments/<name>.toml] [MODEL=...] [SET=...]`: a competition -> runs/<run_id>/.

One run (pipeline/runs/training.py; a run folder's files are listed in pipeline/runs/folder.py), or, for a competition
too small to validate on, a cross-validation (pipeline/stages/cv.py) and its blend with the peers of
`cv.small_blend` (pipeline/stages/blend.py). This dispatch sits above them, so that cv can train its
folds with the training module without importing this stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.datasets import open_competition, too_small_to_validate
from pipeline.log import log
from pipeline.runs.training import train
from pipeline.stages.blend import PEER, blend
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
    held-out fold under cv.min_validation series), a cross-validation, every labeled series then
    held out once, blended with the peers of `cv.small_blend`; `make predict` takes whichever of
    the two cross-validates better (both are scored on the same held-out folds, which chose nothing)
    and averages its fold models."""
    competition = open_competition(config)
    if not too_small_to_validate(config, competition):
        return train(config, experiment=experiment, force=force)
    held_out = len(competition.validation) if competition.validation is not None else "a fold of"
    blended = f", then blended with {' '.join(config.cv.small_blend)} (cv.small_blend)" if config.cv.small_blend else ""
    log.info(
        f"{config.data.competition}: {held_out} validation series are too few to choose a checkpoint on (cv.min_validation={config.cv.min_validation}): "
        f"cross-validating over {config.cv.folds} folds instead{blended}; make predict takes the better cross-validated "
        "and averages its fold models",
    )
    cross_validated = cross_validate(config, experiment, force=force)
    if not config.cv.small_blend:
        return cross_validated
    return blend(config, [f"cv:{cross_validated.name}", *(f"{PEER}{peer}" for peer in config.cv.small_blend)])


if __name__ == "__main__":
    sys.exit(main())
