"""The stages of `make all` (and `make cv`), in the order they run; each one is a make target and
talks to the next through files only.

  download.py   make data       a source -> data/raw/<name>/ (read-only)
  prepare.py    make prepare    data/raw -> data/processed/<competition>/ (+ the answer key in data/private/)
  train.py      make train      a competition -> runs/<run_id>/ (training.py: one run, top to bottom; callbacks.py: what runs every epoch)
  cv.py         make cv         subject-wise folds (repeated with cv.repeats), each an ordinary run, and their summary
  cv_compare.py make cv-compare two CVs compared fold by fold: mean difference, corrected t-test interval, verdict
  ensemble.py   make ensemble   several runs (or a CV's folds) -> one run whose model averages them
  predict.py    make predict    runs -> submissions/<...>.csv
  submit.py     make submit     a submission -> the local leaderboard, or Kaggle
  evaluate.py   make evaluate   a run -> reports/<run_id>/
  runs.py       make runs       the run registry: ids, "the best run", the table of runs
  tracking.py   make ui         every run, CV, trial and study mirrored into MLflow; the MLflow UI
"""
