"""`make cv [EXP=...] [FOLDS=5]`: k-fold cross-validation of one configuration, subject-wise.

Every labeled training series (the competition's train and validation splits together) gets a
fold: whole subjects per fold where the competition names them (GroupKFold on subject ids), else
contiguous blocks in id order with a gap (pipeline.datasets.fold_assignment). Fold i is an ordinary
run (`cv.fold = i`: in the registry, reused when trained, resumed when killed) that selects its
checkpoint on fold i. The cross-validation itself is one more entry of the registry,
runs/<competition>_cv<k>_<model>_<regularizers>_<hash>/:
  config.json   the configuration (cv.fold = -1)
  run.json      kind "cv" and the fold runs' ids: `make predict RUN=cv:<id>` (or RUN=cv) averages them
  metrics.json  per noise level the mean and spread over folds of the fold validation scores; the
                selection score (mean over folds at the selection's noise level) with its definition;
                the fold models' organizer-side test scores, averaged (a report, never a ranking key)
`make cv REFIT=1` then trains one more run on every labeled series for the folds' median best
epoch count, early stopping off (`cv.refit`): the CV chose the epoch count, so the refit needs no
held-out series; run.json names it (`refit`), and `make predict RUN=<its id>` uses it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import train  # the training stage trains single runs and the folds of a cross-validation; this is its `make cv` command line
from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.cv", __doc__)
    parser.add_argument("--refit", action="store_true", help="then train on every labeled series for the CV's median best epoch count (REFIT=1)")
    args = parser.parse_args(argv)
    return run_stage(lambda: train.cross_validate(load_config(args.exp, overrides(args)), experiment=Path(args.exp).stem if args.exp else "", refit=args.refit), keras=True)


if __name__ == "__main__":
    sys.exit(main())
