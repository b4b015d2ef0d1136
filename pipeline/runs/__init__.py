"""The run engine: what every make target that trains, scores or reads a run leans on. Nothing here
is a make target; the stages (pipeline/stages/) and studies call it.

  folder.py     a run folder: its files, written one way (metrics.json last), read back checked, locked
  registry.py   run ids from configs, "the best run", RUN= names resolved, the table of runs
  fitting.py    batch size and patience for the data, compile, resume state, the callbacks of every epoch
  scoring.py    the selection score, validation scores by noise level, the organizer-side test scores
  training.py   one training run, top to bottom
  tracking.py   every run, CV, trial and study mirrored into MLflow
  estimator.py  RecurrentClassifier: a model trained by training.py as a scikit-learn estimator
"""
