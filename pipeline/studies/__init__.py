"""Experiments built on the stages (optional: `make all` does not need them).

tune.py               make tune                Optuna search, each trial cross-validated
compare.py            make compare             the regularizer grid
peers.py              make peers               logistic regression, random forest, MiniRocket, MultiRocket-Hydra, QUANT beside the best run
small_competition.py  make small-competition   BasicMotions as a user's competition, through the default flow
transcribe.py         make transcribe          seq2seq transcription of activity sequences, attention vs fixed context
results.py            make results             the results page and its figures, drawn from the reports on disk
"""
