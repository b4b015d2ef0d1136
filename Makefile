# One target per stage; `make help` lists them. Every target installs what it needs first.
# Variables (all optional): SOURCE (make data), COMPETITION, NAME, EXP (an experiments/*.toml file),
# MODEL, RUN (run ids), NOTEBOOK (make notebooks), FILE and MESSAGE (submit; FILE is the recording of make recording), FORCE=1 (train again), SET (config overrides, e.g. SET="data.classes=12 train.epochs=5"),
# BACKEND (the Keras backend: tensorflow, the default, jax or torch; the same as exporting KERAS_BACKEND),
# TRACKING (MLflow: empty = runs/mlflow.db, off, or a server URI), QUIET=1 (status lines off: pipeline/log.py).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The stamp's name carries a hash of requirements.txt and pyproject.toml: editing either makes the next target reinstall.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
TORCH_STAMP := $(VENV)/.torch-$(shell cat requirements-torch.txt 2>/dev/null | sha256sum | cut -c1-16)
# The optional parts, each a lock file requirements-<extra>.txt installed (with the core, resolved
# together) by the first target that needs it; pyproject.toml declares the same extras.
EXTRAS := jax peers tune tracking phone studies notebooks dev
extra = $(VENV)/.extra-$(1)-$(shell cat requirements-$(1).txt 2>/dev/null | sha256sum | cut -c1-16)
# make test's install: the core, every extra and PyTorch, resolved together in one pip call
ALL_FILES := requirements.txt $(EXTRAS:%=requirements-%.txt) requirements-torch.txt
ALL_STAMP := $(VENV)/.all-$(shell cat $(ALL_FILES) pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
# A Keras backend other than TensorFlow brings its own package along
CORE := $(STAMP) $(if $(filter jax,$(BACKEND) $(KERAS_BACKEND)),$(call extra,jax)) $(if $(filter torch,$(BACKEND) $(KERAS_BACKEND)),$(TORCH_STAMP))

EXP ?= experiments/default.toml
comma := ,
space := $(subst ,, )
TEST_WORKERS ?= 3
# make small-competition's dataset (one of aeon's bundled classification sets) and its competition name
DATASET ?= BasicMotions
SMALL := $(shell echo '$(DATASET)' | tr '[:upper:]' '[:lower:]')
# compare and transcribe have their own default experiment: EXP reaches them only when it is given
EXP_GIVEN := $(if $(filter-out file default,$(origin EXP)),--exp $(EXP))

export TF_CPP_MIN_LOG_LEVEL := 3
ifdef BACKEND
export KERAS_BACKEND := $(BACKEND)
endif
export PYTHONUNBUFFERED := 1
# QUIET=1: the stages' progress and status lines off (warnings, errors and each command's answer stay)
ifdef QUIET
export HAR_QUIET := $(QUIET)
endif
# SET reaches the stages through the environment, so quotes, spaces and | in its values survive the shell
export HAR_SET := $(SET)

# Config overrides from make variables; unset variables leave the experiment's or the default's value.
ARGS := $(if $(SOURCE),--set data.source=$(SOURCE)) $(if $(COMPETITION),--set data.competition=$(COMPETITION)) \
        $(if $(NAME),--set data.name=$(NAME)) $(if $(MODEL),--set model.name=$(MODEL)) $(if $(FOLDS),--set cv.folds=$(FOLDS)) $(if $(REPEATS),--set cv.repeats=$(REPEATS)) $(if $(TRACKING),--set tracking.uri=$(TRACKING)) $(if $(SET),--sets "$$HAR_SET")

.DEFAULT_GOAL := help
.PHONY: help install install-all install-torch gpu-wheels gpu-check all data prepare cv cv-compare tune train ensemble blend predict submit leaderboard evaluate compare peers noise-level results notebooks transcribe small-competition recording recording-check sample-recording export runs models bench test test-all lint format clean postgres-server ui

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv and install the core, requirements.txt (again only when it changes)

install-all: $(ALL_STAMP) ## the core and every optional part (what make test installs)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

install-torch: $(TORCH_STAMP) ## add PyTorch (the torch backend, the GPU check's reference, MultiRocket-Hydra and QUANT); make test does it too

$(TORCH_STAMP): requirements-torch.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-torch.txt
	@rm -f $(VENV)/.torch-*
	@touch $@

# .venv/.extra-<name>-<hash>: requirements-<name>.txt installed beside the core
$(VENV)/.extra-%: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-$(firstword $(subst -, ,$*)).txt
	@rm -f $(VENV)/.extra-$(firstword $(subst -, ,$*))-*
	@touch $@

# The package itself with every extra, resolved by pip against the locks in the same call: a range in
# pyproject.toml that a pin breaks fails the install (tests/test_cli.py then checks what got installed)
$(ALL_STAMP): $(ALL_FILES) $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation $(ALL_FILES:%=-r %) -e ".[all]"
	@rm -f $(VENV)/.all-* $(VENV)/.extra-* $(VENV)/.torch-*
	@touch $@ $(foreach name,$(EXTRAS),$(call extra,$(name))) $(TORCH_STAMP)

all: data prepare train ## the main job end to end on the embedded data: data to a scored submission and a report
	@$(MAKE) --no-print-directory predict RUN=experiment
	@$(MAKE) --no-print-directory submit
	@$(MAKE) --no-print-directory evaluate RUN=experiment

data: $(CORE) ## download a source into data/raw (SOURCE=embedded | local:<path>)
	$(PY) -m pipeline.stages.download $(ARGS)

prepare: $(CORE) ## build data/processed/<competition> (classroom and raw from HAPT, or a copied one)
	$(PY) -m pipeline.stages.prepare $(ARGS)

cv: $(CORE) ## cross-validate EXP: FOLDS (default 5) subject-wise folds, each an ordinary run, one result in make runs; REFIT=1 then trains on all
	$(PY) -m pipeline.stages.cv --exp $(EXP) $(ARGS) $(if $(REFIT),--refit)

# a peer (peer:<name>) needs aeon, and PyTorch for MultiRocket-Hydra and QUANT: installed on first use
cv-compare: $(CORE) $(if $(findstring peer:,$(A)$(B)),$(call extra,peers) $(TORCH_STAMP)) ## two cross-validations compared fold by fold (A=, B= a CV id, an EXP file, or peer:<name>[+copies] fitted on the other's folds): mean difference, corrected t-test interval, verdict; LEVEL=<noise>: paired on the held-out folds' validation accuracy at that noise
	$(PY) -m pipeline.stages.cv_compare $(ARGS) --a "$(A)" --b "$(B)" $(if $(LEVEL),--level $(LEVEL))

tune: $(CORE) $(call extra,tune) ## Optuna search over EXP's tune.space, each trial cross-validated (TRIALS=, JOBS=N workers, STORAGE=<database URL>)
	$(PY) -m pipeline.studies.tune --exp $(EXP) $(ARGS) $(if $(TRIALS),--set tune.trials=$(TRIALS)) $(if $(STORAGE),--set tune.storage=$(STORAGE)) $(if $(JOBS),--jobs $(JOBS))

# a copied competition may be too small to validate on: make train then blends its CV with MiniRocket (aeon)
train: $(CORE) $(if $(filter-out classroom raw,$(COMPETITION)),$(call extra,peers)) ## train EXP (default experiments/default.toml) into runs/<run_id>/ (MODEL=, SET=, FORCE=1); a competition too small to validate on: a CV blended with cv.small_blend
	$(PY) -m pipeline.stages.train --exp $(EXP) $(ARGS) $(if $(FORCE),--force)

ensemble: $(CORE) ## one run whose model averages RUN="id1 id2 ..." (or RUN=cv:<cv id>); RUN="cv:A cv:B": the ensemble cross-validated (a CV entry for cv-compare)
	$(PY) -m pipeline.stages.ensemble --exp $(EXP) $(ARGS) --run "$(RUN)"

blend: $(CORE) $(call extra,peers) $(TORCH_STAMP) ## recurrent CVs and peers in one noise-aware blend, cross-validated: RUN="cv:<cv id> peer:<name>[+copies] ..." (a CV entry for cv-compare and predict); REFIT=1 then blends the CVs' refit runs
	$(PY) -m pipeline.stages.blend $(ARGS) --run "$(RUN)" $(if $(REFIT),--refit)

predict: $(CORE) ## write a validated submission CSV from RUN="id ..." (default: the best run; several = ensemble; experiment = EXP's run)
	$(PY) -m pipeline.stages.predict --exp $(EXP) $(ARGS) $(if $(RUN),--run "$(RUN)")

submit: $(CORE) ## score FILE (default: the newest submission) on the local leaderboard, or upload it to Kaggle
	$(PY) -m pipeline.stages.submit --exp $(EXP) $(ARGS) $(if $(FILE),--file "$(FILE)") $(if $(MESSAGE),--message "$(MESSAGE)")

leaderboard: $(CORE) ## the local leaderboard: public and private scores, best first, edited files flagged
	@$(PY) -m pipeline.stages.submit --leaderboard --exp $(EXP) $(ARGS)

evaluate: $(CORE) ## report on RUN (default: the best run): confusion, per-class scores, noise curve, attention, gradients
	$(PY) -m pipeline.stages.evaluate --exp $(EXP) $(ARGS) $(if $(RUN),--run "$(RUN)")

compare: $(CORE) ## the regularizer grid (experiments/compare.toml budget) -> reports/compare/<competition>/
	$(PY) -m pipeline.studies.compare $(EXP_GIVEN) $(ARGS)

peers: $(CORE) $(call extra,peers) $(TORCH_STAMP) ## logistic regression, random forest, MiniRocket, MultiRocket-Hydra and QUANT, with and without noised copies, with fit time and peak memory, beside the best run -> reports/peers/<competition>/
	$(PY) -m pipeline.studies.peers --exp $(EXP) $(ARGS)

noise-level: $(CORE) ## how noisy the test file is, series by series: each one's white-noise level estimated from its second differences (against the truth where the organizer's side exists) -> reports/noise_level/<competition>/
	$(PY) -m pipeline.studies.noise_level --exp $(EXP) $(ARGS)

results: $(CORE) $(if $(wildcard runs/tune/*.db),$(call extra,tune)) ## the results page drawn from the reports on disk (peers, evaluations, paired comparisons, tuning studies) with its figures -> docs/results.md, docs/results/
	$(PY) -m pipeline.studies.results --exp $(EXP) $(ARGS)

notebooks: $(CORE) $(call extra,notebooks) ## execute the notebooks headless at their default budget, in place: their outputs are what readers see (NOTEBOOK=02 runs one)
	$(PY) -m pipeline.studies.notebooks $(NOTEBOOK)

transcribe: $(CORE) $(call extra,studies) ## seq2seq transcription, recorded and shuffled activity order: data, both variants, decoding, report (SEEDS="1 2 42")
	$(PY) -m pipeline.studies.transcribe $(EXP_GIVEN) $(ARGS) $(if $(SEEDS),--set "transcribe.seeds=[$(subst $(space),$(comma),$(strip $(SEEDS)))]")

small-competition: $(CORE) $(call extra,peers) ## a small public dataset bundled with aeon (DATASET=BasicMotions: 40 + 40 series, 6 channels, 4 classes; or PickupGestureWiimoteZ, ACSF1, ...) as a user's competition, noisy test: data, prepare, train, predict, scored beside MiniRocket
	$(PY) -m pipeline.studies.small_competition write --dataset $(DATASET) $(ARGS)
	@$(MAKE) --no-print-directory data SOURCE=local:data/external/$(SMALL)
	@$(MAKE) --no-print-directory prepare COMPETITION=$(SMALL)
	@$(MAKE) --no-print-directory train COMPETITION=$(SMALL)
	@$(MAKE) --no-print-directory predict COMPETITION=$(SMALL)
	$(PY) -m pipeline.studies.small_competition score --dataset $(DATASET) $(ARGS)

recording: $(CORE) ## your phone recording -> timeline, probabilities, figure in reports/recordings/<name>/ (FILE=, RUN=; a plain CSV: COLUMNS= UNITS= GYRO=; LABELS=)
	$(PY) -m pipeline.phone.recording --exp $(EXP) $(ARGS) --file "$(FILE)" $(if $(RUN),--run "$(RUN)") $(if $(LABELS),--labels "$(LABELS)") $(if $(COLUMNS),--columns "$(COLUMNS)") $(if $(UNITS),--units "$(UNITS)") $(if $(GYRO),--gyro "$(GYRO)")

recording-check: $(CORE) ## RUN's timeline agreement on every held-out HAPT recording, straight and through a Sensor Logger export -> reports/recordings/
	$(PY) -m pipeline.phone.recording --held-out --exp $(EXP) $(ARGS) $(if $(RUN),--run "$(RUN)")

sample-recording: $(CORE) ## a held-out HAPT recording as a phone app exports it -> data/samples/ (SUBJECT=2, FORMAT=sensorlogger|phyphox|csv)
	$(PY) -m pipeline.phone.sample_recording $(ARGS) $(if $(SUBJECT),--user $(SUBJECT)) $(if $(FORMAT),--format $(FORMAT))

export: $(CORE) $(call extra,phone) ## RUN's model (default: the best run) as LiteRT files, parity with Keras checked -> exports/<run_id>/
	$(PY) -m pipeline.phone.export --exp $(EXP) $(ARGS) $(if $(RUN),--run "$(RUN)")

runs: $(CORE) ## list the trained runs with their accuracy at each test-noise level
	@$(PY) -m pipeline.stages.runs $(if $(SET),--sets "$$HAR_SET") $(if $(COMPETITION),--competition $(COMPETITION))

ui: $(CORE) $(call extra,tracking) ## the MLflow UI on http://127.0.0.1:5000 for the project's store (PORT=; TRACKING= another store)
	$(PY) -m pipeline.stages.ui $(ARGS) $(if $(PORT),--port $(PORT))

models: $(CORE) ## list the registered models with parameter counts for 5x9 and 128x9 series
	@$(PY) -m pipeline.models

bench: $(CORE) $(call extra,phone) ## training/inference speed and peak memory of the main models -> reports/bench.{json,md}
	$(PY) -m pipeline.perf.bench $(if $(SET),--sets "$$HAR_SET")

test: $(ALL_STAMP) lint postgres-server ## lint, then the test suite (TEST_WORKERS=3 processes, a test file each at a time); the full tier's checks only where a file they cover changed since their recorded pass
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-all: $(ALL_STAMP) lint postgres-server ## lint, then every test, the full tier included; when all pass, its fingerprints are written to tests/full_tier.json (commit it)
	TEST_TIER=all $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The tuner's tests start a real PostgreSQL server: Debian's, installed here when it is missing.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { echo "installing Debian's postgresql (the tuner's tests start a server)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  { echo "error: no PostgreSQL server binaries and apt-get failed: install postgresql (as root: apt-get install postgresql)" >&2; exit 1; }

lint: $(call extra,dev) ## ruff check and ruff format --check (rules and line length: pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(call extra,dev) ## rewrite the code in the project's format and fix what ruff can fix safely
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Wheels for a GPU machine without network (GUIDE section 7: Python 3.12, CUDA JAX and PyTorch, no keras):
# keras at this project's pin and the two small packages it needs that such a machine lacks.
GPU_WHEELS := $(shell grep '^keras==' requirements.txt) namex==0.1.0 optree==0.20.0

gpu-wheels: ## download the wheels the GPU check brings along into .whl/ (for Python 3.12, x86-64)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

gpu-check: $(if $(DRY),$(ALL_STAMP)) ## the GPU check on a GPU machine (scripts/gpu-check.sh; DRY=1: every step on this CPU) -> reports/gpu_check.md
	$(if $(DRY),PYTHON=$(PY) ,)bash scripts/gpu-check.sh $(if $(DRY),--dry-run)

clean: ## remove derived data, runs, reports and exports (keeps data/raw and .venv)
	rm -rf data/processed/* data/private/* data/samples runs reports/* exports
