"""A Kaggle-style human activity recognition pipeline: sensor series in, noise-robust recurrent
models, submissions and reports out.

The package is laid out by role, and imports run one way only, down this list (a module may import
from its own layer and from the layers above it in the list, never from a later one; the test
tests/test_layout.py fails on an import against this order):

  1. shared   config.py errors.py files.py cli.py runtime.py log.py progress.py   imported by everything below (__main__.py: the har command)
  2. data     pipeline/data/      the embedded HAPT recordings, signals, competitions, datasets, scoring, Kaggle
  3. models   pipeline/models/    every architecture of the lecture, their layers, diagnostics, the peers' estimators
  4. runs     pipeline/runs/      the run engine: a run folder, the registry of runs, fitting, scoring, one training run, tracking
  5. stages   pipeline/stages/    make targets only, the path of `make all` and `make cv`: download, prepare, train, cv, predict, submit, evaluate, ...
  6. phone    pipeline/phone/     your own recordings and the model on a phone: formats, recording, export
  7. studies  pipeline/studies/   experiments built on the stages: tune, compare, peers, small_competition, transcribe
  8. perf     pipeline/perf/      benchmarks and the GPU check

Why this order: the engine trains, scores and records one run of a model and knows no make target;
a stage is a make target built from data, models and the engine, and never needs a study; the phone features
reuse trained runs (stages) and nothing of the studies; the benchmarks time models, training and
exports, so they come last. Within a layer, modules may import each other (without cycles).
"""

LAYERS = ("shared", "data", "models", "runs", "stages", "phone", "studies", "perf")
