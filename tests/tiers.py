"""The full tier: the slowest system checks, which `make test` runs only when a file they cover has
changed since their last recorded pass, and `make test-all` always runs (docs/testing.md, "Two tiers").

A check's covered files are the test file, the test helpers it imports, the files every test reads
(conftest, Makefile, pyproject.toml, requirements, experiments) and every module of the package that
importing its entry modules runs (the import graph read from the source, tests/code_graph.py), plus
any other file it names. Their SHA-256 digests make its fingerprint. `make test-all` writes the
fingerprint of every check of the tier to FULL_TIER_RECORD when the whole suite passes, and that file
is committed: a fresh clone then skips a check only where every file it covers is byte for byte what
passed, as a build system's test cache would (Bazel, for one), so a change to any of them runs it again.
Why not "changed since the main branch": CI tests main itself, where that is always nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

from tests.code_graph import import_graph, imported_closure, imports_in, package_modules

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# (another file only for the tier's own test, tests/test_tiers.py)
FULL_TIER_RECORD = Path(os.environ.get("FULL_TIER_RECORD", PROJECT_ROOT / "tests" / "full_tier.json"))
# make test-all sets TEST_TIER=all; make test leaves it unset (run a check of the tier when it changed).
TIER_VARIABLE = "TEST_TIER"
EVERY_TEST_READS = (
    "Makefile",
    "pyproject.toml",
    "requirements*.txt",
    "experiments/*.toml",
    "tests/conftest.py",
    "tests/code_graph.py",
    "tests/tiers.py",
)


@dataclasses.dataclass(frozen=True)
class Check:
    why: str  # why it is in the tier: what it proves and what it costs
    modules: tuple[str, ...] = ()  # what it runs besides what its test file imports (make targets, python -m)
    files: tuple[str, ...] = ()  # other files it reads (globs from the project root)


TRAIN = ("pipeline.stages.train",)  # the checks that train their run with make train
EXPORT = ("pipeline.phone.export", *TRAIN)

# Test functions by "file::name" (every parameter of one), with the seconds each took on 2 cores
# (docs/testing.md has the measurements): the backends, multi-device training, the tuner's
# server, MLflow, the honest-folds statistics, the studies, the notebooks, the phone and the
# user-data paths. The core stays in every make test: the stages one by one, make all end to end,
# a repeated cross-validation and its paired comparison, the models, the data, every error path.
FULL_TIER = {
    "tests/test_gpu_check.py::test_the_gpu_check_dry_run_exercises_every_step": Check(
        "the GPU machine's script on CPU: a wheel installed, every bench phase on three backends (120 s)",
        ("pipeline.perf.gpu_check", "pipeline.perf.bench", "pipeline.stages.train", "pipeline.stages.evaluate"),
        ("scripts/gpu-check.sh",),
    ),
    "tests/test_models_on_other_backends.py::test_every_augmentation_test_passes_on_another_backend": Check(
        "the augmentation layers' and consistency training's test files again on JAX and PyTorch (120 s)",
        ("pipeline.models", "pipeline.runs.fitting"),
        ("tests/test_augment.py", "tests/test_consistency.py"),
    ),
    "tests/test_backends.py::test_training_predicting_and_evaluating_on_jax_is_a_run_of_its_own": Check(
        "make train, predict and evaluate on JAX (130 s)",
        ("pipeline.stages.train", "pipeline.stages.predict", "pipeline.stages.evaluate"),
    ),
    "tests/test_backends.py::test_data_parallel_on_two_jax_cpu_devices": Check(
        "JAX's data_parallel on two CPU devices (35 s)", ("pipeline.stages.train",)
    ),
    "tests/test_backends.py::test_a_model_saved_on_tensorflow_predicts_and_differentiates_the_same_on_jax_and_torch": Check(
        "a TensorFlow-trained file on JAX and PyTorch (55 s)", ("pipeline.stages.train",)
    ),
    "tests/test_models.py::test_models_with_layers_of_their_own_predict_and_differentiate_the_same_on_jax_and_torch": Check(
        "every model with layers of its own on JAX and PyTorch (85 s)", ("pipeline.models",)
    ),
    "tests/test_train.py::test_mirrored_strategy_on_two_logical_cpus": Check(
        "TensorFlow's MirroredStrategy on two logical CPUs (80 s)", ("pipeline.stages.train",)
    ),
    "tests/test_tune.py::test_workers_on_two_machines_share_one_postgresql_study": Check(
        "two tuner workers on a real PostgreSQL server (125 s)", ("pipeline.studies.tune",), ("tests/postgres.py",)
    ),
    "tests/test_tune.py::test_a_worker_killed_mid_trial_loses_nothing": Check(
        "a tuner worker killed mid trial on a real PostgreSQL server (90 s)",
        ("pipeline.studies.tune",),
        ("tests/postgres.py",),
    ),
    "tests/test_tracking.py::test_a_tracking_server_that_is_down_costs_one_warning_and_the_run_finishes": Check(
        "a run with MLflow's server down (30 s)", ("pipeline.runs.tracking", *TRAIN)
    ),
    "tests/test_tracking.py::test_a_cv_and_its_report_in_mlflow_and_make_ui_serves_them": Check(
        "MLflow read back and make ui's server (35 s beyond the shared CVs)",
        ("pipeline.stages.cv", "pipeline.stages.evaluate", "pipeline.runs.tracking"),
    ),
    "tests/test_honest_folds.py::test_pure_noise_scores_chance_when_nested_and_above_chance_when_scored_where_it_chose": Check(
        "two noise-only cross-validations, 16 fold runs (220 s)", ("pipeline.stages.cv",)
    ),
    "tests/test_transcribe.py::test_make_transcribe_end_to_end_on_a_tiny_budget": Check(
        "make transcribe, eight seq2seq models (215 s)", ("pipeline.studies.transcribe",)
    ),
    "tests/test_train_units.py::test_bench_measures_speed_and_memory": Check(
        "make bench's speed and memory measurement (60 s)", ("pipeline.perf.bench",)
    ),
    "tests/test_backends.py::test_a_feature_of_another_backend_is_refused_in_one_line": Check(
        "each backend-only feature refused on the others, a process per backend (55 s)", TRAIN
    ),
    "tests/test_train.py::test_a_run_trained_for_noise_consistency_predicts_and_evaluates_like_any_run": Check(
        "noise-consistency training through make train, predict and evaluate (60 s)",
        (*TRAIN, "pipeline.stages.predict", "pipeline.stages.evaluate"),
    ),
    "tests/test_tracking.py::test_runs_made_without_mlflow_are_mirrored_by_the_backfill_once": Check(
        "a tiny run trained, then mirrored into a real MLflow store by make ui's backfill (60 s)", TRAIN
    ),
    "tests/test_train.py::test_select_on_clean_with_mixed_precision": Check(
        "mixed precision, a GPU feature, with selection on clean series (35 s)", TRAIN
    ),
    "tests/test_models.py::test_model_learns_on_classroom_series": Check(
        "every model trained on 5x9 series too (70 s); make test trains them on 128x9 and builds them for 5x9",
        ("pipeline.models",),
    ),
    "tests/test_models.py::test_seq2seq_learns_to_reverse_with_greedy_and_beam_decoding": Check(
        "two seq2seq models trained 15 epochs on a toy task (50 s)", ("pipeline.models",)
    ),
    "tests/test_models.py::test_decoding_stops_at_end_token_and_max_length": Check(
        "decoding of those seq2seq models", ("pipeline.models",)
    ),
    "tests/test_artifacts.py::test_a_killed_prepare_leaves_a_whole_competition_folder": Check(
        "make prepare killed hard twice, then tidied (40 s)", ("pipeline.stages.prepare",)
    ),
    "tests/test_tune.py::test_cv_refit_trains_on_every_labeled_series_for_the_cv_epoch_count": Check(
        "make cv REFIT=1 (65 s)", ("pipeline.stages.cv",)
    ),
    "tests/test_tune.py::test_a_pruned_trial_is_recorded_as_pruned": Check(
        "a tuning trial pruned (17 s)", ("pipeline.studies.tune",)
    ),
    "tests/test_make.py::test_local_source_becomes_a_competition_that_trains_and_evaluates_without_an_answer_key": Check(
        "a user's own folder through every stage, a 5-fold CV (150 s)",
        ("pipeline.stages.download", "pipeline.stages.prepare", "pipeline.stages.cv", "pipeline.stages.predict")
        + ("pipeline.stages.evaluate", *TRAIN),
    ),
    "tests/test_make.py::test_twelve_classes_and_sensor_faults_through_prepare_train_and_predict": Check(
        "12 classes and the sensor-faults profile through prepare, train and predict (95 s)",
        ("pipeline.stages.prepare", "pipeline.stages.predict", *TRAIN),
    ),
    "tests/test_submit.py::test_an_ensemble_is_a_run_that_predict_evaluate_and_export_take": Check(
        "make ensemble, then predict, evaluate and export of it (110 s)",
        ("pipeline.stages.ensemble", "pipeline.stages.predict", "pipeline.stages.evaluate", *EXPORT),
    ),
    "tests/test_peers.py::test_make_peers_scores_every_peer_with_and_without_noised_copies": Check(
        "make peers, the five peers with and without copies (52 s)", ("pipeline.studies.peers",)
    ),
    "tests/test_small_competition.py::test_written_competition_is_the_original_layout_with_a_noisy_test_and_a_key_outside": Check(
        "BasicMotions written and scored beside MiniRocket (60 s)", ("pipeline.studies.small_competition",)
    ),
    "tests/test_recording.py::test_held_out_hapt_recordings_through_an_app_format_agree_with_the_labels": Check(
        "nine held-out recordings through a raw run trained on every raw window (160 s with the run)",
        ("pipeline.phone.recording", *TRAIN),
    ),
    "tests/test_recording.py::test_make_recording_writes_the_timeline_probabilities_and_figure": Check(
        "make sample-recording and make recording (25 s)",
        ("pipeline.phone.recording", "pipeline.phone.sample_recording", *TRAIN),
    ),
    "tests/test_export.py::test_the_litert_file_gives_keras_answers_through_the_litert_interpreter": Check(
        "make export read back by LiteRT (25 s, and the raw run)", EXPORT
    ),
    "tests/test_export.py::test_the_quantized_variant_the_parity_report_and_the_contract": Check(
        "the exported variants and their report (the raw run)", EXPORT
    ),
    "tests/test_export.py::test_a_parity_failure_writes_nothing_and_a_cv_needs_one_run": Check(
        "export's refusals (the raw run)", EXPORT
    ),
    "tests/test_export.py::test_every_registered_model_exports_with_builtin_ops_and_matches_keras": Check(
        "every registered model through the LiteRT converter (40 s)", EXPORT
    ),
    "tests/test_notebooks.py::test_compare_regularizers_states_a_conclusion_from_its_numbers": Check(
        "notebook 02 executed (60 s)", files=("notebooks/02-compare-regularizers.ipynb",)
    ),
    "tests/test_notebooks.py::test_attention": Check(
        "notebook 03 executed (50 s with its run)", TRAIN, ("notebooks/03-attention.ipynb",)
    ),
    "tests/test_notebooks.py::test_bptt_shows_the_three_figures_with_measured_sentences": Check(
        "notebook 04 executed (50 s)", files=("notebooks/04-bptt.ipynb",)
    ),
    "tests/test_notebooks.py::test_peers_under_noise_states_its_numbers_from_the_reports": Check(
        "notebook 05 executed on tiny reports (15 s)", files=("notebooks/05-peers-under-noise.ipynb",)
    ),
    "tests/test_notebooks.py::test_make_notebooks_writes_outputs_in_place_only_when_every_cell_ran": Check(
        "make notebooks' runner on two small notebooks, one failing (15 s)"
    ),
    "tests/test_results.py::test_make_noise_level_estimates_the_test_file_and_measures_itself_against_the_truth": Check(
        "make noise-level on classroom against the organizer's truth (10 s)", ("pipeline.studies.noise_level",)
    ),
    "tests/test_rocket.py::test_multirocket_hydra_in_batches_predicts_what_aeons_classifier_predicts": Check(
        "MultiRocket-Hydra in float32 batches against aeon's own classifier (90 s, most of it numba compiling aeon's)",
        ("pipeline.models.rocket",),
    ),
    "tests/test_estimator.py::test_cross_val_score_with_group_folds_and_a_pipeline": Check(
        "the estimator through scikit-learn's cross_val_score with group folds, in a Pipeline (35 s)",
        ("pipeline.runs.estimator",),
    ),
    "tests/test_models.py::test_models_reload_in_a_fresh_process_with_identical_predictions": Check(
        "every model saved, then loaded in a fresh process with identical predictions (40 s); make test's runs reload the BiLSTM",
        ("pipeline.models",),
    ),
    "tests/test_rocket.py::test_every_peer_reads_the_classroom_five_steps": Check(
        "MultiRocket-Hydra and QUANT on 5-step series (75 s in a fresh clone, most of it numba compiling aeon's)",
        ("pipeline.models.baselines", "pipeline.models.rocket"),
    ),
    "tests/test_cv_compare.py::test_the_two_cvs_as_one_cross_validated_ensemble_and_a_peer_on_their_folds": Check(
        "make predict, make ensemble and two make cv-compare on the session's two CVs, QUANT fitted on 4 folds (80 s)",
        ("pipeline.stages.predict", "pipeline.stages.ensemble", "pipeline.stages.cv_compare"),
    ),
    "tests/test_evaluate.py::test_evaluate_report_matches_the_saved_predictions": Check(
        "make evaluate's report against its predictions, the test file and the answer key (70 s); make all evaluates too",
        ("pipeline.stages.evaluate", *TRAIN),
    ),
    "tests/test_blend.py::test_make_blend_is_a_cv_entry_scored_on_folds_that_chose_nothing_and_a_run_to_predict_evaluate_and_record": Check(
        "make blend of a CV and logistic regression on 4 folds, then cv-compare, predict, evaluate, export and a recording on it (100 s)",
        (
            "pipeline.stages.blend",
            "pipeline.stages.cv_compare",
            "pipeline.stages.predict",
            "pipeline.stages.evaluate",
            "pipeline.phone.export",
        ),
    ),
    "tests/test_evaluate.py::test_attention_runs_get_attention_maps": Check(
        "attention maps in the report of notebook 03's run (40 s)", ("pipeline.stages.evaluate", *TRAIN)
    ),
}


def test_key(nodeid: str) -> str:
    """'tests/test_x.py::test_y[jax]' -> 'tests/test_x.py::test_y' (one check for every parameter)."""
    return nodeid.split("[")[0]


def covered_files(key: str, check: Check, root: Path = PROJECT_ROOT) -> list[Path]:
    """Every file the check covers (module docstring), sorted. The Python files and notebooks it
    names add what they import, as its test file does."""
    test_file = root / key.split("::")[0]
    files, named = {test_file}, set()
    for pattern in (*EVERY_TEST_READS, *check.files):
        matched = sorted(root.glob(pattern))
        if not matched and "*" not in pattern:
            raise FileNotFoundError(f"{key}: its covered file {pattern} does not exist")
        files.update(matched)
        named.update(matched if pattern in check.files else ())
    modules, graph = package_view(root)
    helpers = {f"tests.{path.stem}": path for path in (root / "tests").glob("*.py") if path.stem != "__init__"}
    importing = [test_file, *(path for path in named if path.suffix in (".py", ".ipynb"))]
    imported = set().union(*(imports_in(path, modules | helpers) for path in importing))
    files |= {helpers[module] for module in imported if module in helpers}
    closure = imported_closure({*check.modules, *imported} & modules.keys(), graph)
    return sorted(files | {modules[module] for module in closure})


def package_view(root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    """The package's modules and import graph; this project's read once a process (a test session
    never changes the package's source), a scratch tree's read each time."""
    return project_view() if root == PROJECT_ROOT else read_view(root)


def read_view(root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    return package_modules(root / "pipeline"), import_graph(root / "pipeline")


@functools.cache
def project_view() -> tuple[dict[str, Path], dict[str, set[str]]]:
    return read_view(PROJECT_ROOT)


def fingerprint(key: str, check: Check, root: Path = PROJECT_ROOT) -> str:
    """SHA-256 over the covered files' paths and digests."""
    digest = hashlib.sha256()
    for path in covered_files(key, check, root):
        digest.update(f"{path.relative_to(root)} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def runs_everything() -> bool:
    return os.environ.get(TIER_VARIABLE, "") == "all"


def recorded() -> dict[str, dict]:
    return json.loads(FULL_TIER_RECORD.read_text()) if FULL_TIER_RECORD.is_file() else {}


def unchanged_since_recorded_pass(key: str, record: dict[str, dict]) -> str | None:
    """The date of the check's recorded pass if every file it covers is unchanged since, else None."""
    entry = record.get(key)
    if entry and entry["fingerprint"] == project_fingerprint(key):
        return entry["passed"]
    return None


@functools.cache
def project_fingerprint(key: str) -> str:
    """A check's fingerprint in this project, computed once a process: every parameter of a check and
    every worker's collection asks for it."""
    return fingerprint(key, FULL_TIER[key])


def tier_result(nodeid: str, when: str, outcome: str) -> str | None:
    """What one pytest report says of a check of the tier: "failed" for a failure or a skip in any
    phase (a parameter skipped is not a pass), "passed" for a passing call, None otherwise."""
    if test_key(nodeid) not in FULL_TIER:
        return None
    if outcome in ("failed", "skipped"):
        return "failed"
    return "passed" if when == "call" else None


def complete_pass(passed: set[str], failed: set[str]) -> bool:
    """Whether a session's results let make test-all record the tier: every check passed, and none
    failed or was skipped (`failed` holds both), in any of its parameters."""
    return passed >= FULL_TIER.keys() and not failed


def record_passes(passed_on: str) -> None:
    """Write every check's fingerprint, as make test-all does when the whole suite passed."""
    record = {key: {"fingerprint": fingerprint(key, check), "passed": passed_on} for key, check in FULL_TIER.items()}
    temporary = FULL_TIER_RECORD.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    temporary.replace(FULL_TIER_RECORD)
