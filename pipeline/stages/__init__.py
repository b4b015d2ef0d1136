"""The make targets: the stages of `make all` (and `make cv`), in the order they run. Each module is
one make target, a small function plus its `main()`, and talks to the next through files only; what
they share (a run folder, fitting, scoring, the registry, tracking) is the engine, pipeline/runs/.

  download.py   make data       a source -> data/raw/<name>/ (read-only)
  prepare.py    make prepare    data/raw -> data/processed/<competition>/ (+ the answer key in data/private/)
  train.py      make train      a competition -> runs/<run_id>/ (one run: pipeline/runs/training.py)
  cv.py         make cv         subject-wise folds (repeated with cv.repeats), each an ordinary run, and their summary
  cv_compare.py make cv-compare two CVs compared fold by fold: mean difference, corrected t-test interval, verdict
  ensemble.py   make ensemble   several runs (or a CV's folds) -> one run whose model averages them
  blend.py      make blend      CVs and peers -> a cross-validated blend gated by each series' noise level
  predict.py    make predict    runs -> submissions/<...>.csv
  submit.py     make submit     a submission -> the local leaderboard, or Kaggle
  evaluate.py   make evaluate   a run -> reports/<run_id>/
  runs.py       make runs       the table of runs (the registry: pipeline/runs/registry.py)
  ui.py         make ui         the MLflow UI over the mirror of every run (pipeline/runs/tracking.py)
"""
