"""Shared fixtures: a temp project root, and the real embedded data prepared once per session by make."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from pipeline.config import Config, load_config
from tests import tiers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# MLflow tracking off in the make targets the tests run (make reads TRACKING from the environment);
# the tracking tests turn it on with TRACKING= on their command line (tests/test_tracking.py).
os.environ["TRACKING"] = "off"
UNTRACKED = "--set=tracking.uri=off"  # the same for a stage run as `python -m`


def run_make(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a real make target in the project root; output is captured for assertions."""
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )


def start_make(log: Path, *args: str, new_session: bool = False) -> subprocess.Popen:
    """Start a real make target in the background, its output going to `log` (no pipe to fill up).
    `new_session`: in a process group of its own, so that a server it starts can be stopped with it."""
    return subprocess.Popen(
        ["make", "--no-print-directory", *args],
        cwd=PROJECT_ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )


def run_module(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.<module>` in a fresh process, as make does."""
    return subprocess.run(
        [sys.executable, "-m", module, *args, UNTRACKED],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def on_backend(backend: str, *command: str, timeout: int = 600, **variables: str) -> subprocess.CompletedProcess:
    """Run a command in the project root with KERAS_BACKEND=backend (and more variables); output captured."""
    environment = {**os.environ, "KERAS_BACKEND": backend, **variables}
    return subprocess.run(
        list(command), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env=environment
    )


@pytest.fixture
def config_at(tmp_path: Path):
    """config_at(*overrides) -> a Config whose data, runs and submissions live under tmp_path."""

    def make(*overrides: str) -> Config:
        return load_config(None, [f"paths.root={tmp_path}", *overrides])

    return make


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once per test session, by whichever xdist worker asks first: the others wait on
    a file lock and reuse it (the workers' temp roots share a parent). Callers copy out what they
    change, so that no worker sees another's files."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / f"built-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / ".complete").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".complete").touch()
    return folder


def make_data_prepare(root: Path) -> None:
    result = run_make("data", "prepare", f"SET=paths.root={root}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root of this worker's own holding the embedded HAPT data as `make data prepare`
    writes it: prepared once per session (about 20 s), copied into each worker's root."""
    built = built_once(tmp_path_factory, "prepared", make_data_prepare)
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(built / "data", root / "data", symlinks=True)
    return root


@pytest.fixture
def shared_data_root(prepared_root: Path, tmp_path: Path) -> Path:
    """A fresh project root (its own runs, reports, submissions) that shares the prepared data."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "data").symlink_to(prepared_root / "data")
    return root


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    """A real PostgreSQL server on a free loopback port for this test process (tests/postgres.py)."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_base_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh database on that server, named after the test."""
    from tests.postgres import create_database

    return create_database(postgres_base_url, request.node.name.lower()[:60])


@pytest.fixture(scope="session")
def prepared_config(prepared_root: Path) -> Config:
    return load_config(None, [f"paths.root={prepared_root}"])


# Small and fast training: 300 classroom series, 8 units, a few epochs.
TINY = ["train.max_train_series=300", "model.units=8", "train.epochs=3", "train.noise_seeds=1", "train.verbose=0"]
TINY_RUN_OVERRIDES = [*TINY, "regularization.gaussian_noise=0.5", "regularization.l2=1e-4"]


def make_train(root: Path, *overrides: str, exp: str = "experiments/default.toml") -> Path:
    """`make train` of a config in a project root; its finished run folder."""
    from pipeline.runs import registry

    sets = [f"paths.root={root}", *overrides]
    result = run_make("train", f"EXP={exp}", f"SET={' '.join(sets)}")
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "runs" / registry.run_id_for(load_config(exp, sets))


def shared_run(
    tmp_path_factory: pytest.TempPathFactory,
    prepared_root: Path,
    name: str,
    overrides: list[str],
    exp: str = "experiments/default.toml",
) -> Path:
    """A run made by `make train`, trained once per session for all workers on the same prepared data
    and copied into this worker's root (a run folder holds no paths of its own); its folder there."""
    from pipeline.runs import registry

    def train(folder: Path) -> None:
        (folder / "data").symlink_to(built_once(tmp_path_factory, "prepared", make_data_prepare) / "data")
        make_train(folder, *overrides, exp=exp)

    built = built_once(tmp_path_factory, name, train)
    run_id = registry.run_id_for(load_config(exp, overrides))  # paths are not hashed
    run_dir = prepared_root / "runs" / run_id
    if not (run_dir / "metrics.json").is_file():  # unless a test of this worker trained it already
        shutil.copytree(built / "runs" / run_id, run_dir, dirs_exist_ok=True)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, prepared_root: Path) -> Path:
    """The baseline experiment with a noise layer and L2, tiny (shared_run)."""
    return shared_run(tmp_path_factory, prepared_root, "tiny_run", TINY_RUN_OVERRIDES, "experiments/baseline.toml")


# A small raw-window BiLSTM (16 units, 4 epochs): recordings and exports use it. It has the
# window-statistics branch (model.window_stats), so that the branch goes through export and recording too.
RAW_RUN_OVERRIDES = [
    "data.competition=raw",
    "model.units=16",
    "train.epochs=4",
    "train.noise_seeds=1",
    "train.verbose=0",
    "model.window_stats=true",
]


@pytest.fixture(scope="session")
def raw_run(tmp_path_factory: pytest.TempPathFactory, prepared_root: Path) -> str:
    """That raw run's id (shared_run)."""
    return shared_run(tmp_path_factory, prepared_root, "raw_run", RAW_RUN_OVERRIDES).name


# The notebooks' tiny training, and the attention run notebook 03 trains with it: the report test
# evaluates the same run, so it is trained once for both.
NOTEBOOK_TRAIN = [
    "train.max_train_series=200",
    "model.units=8",
    "train.epochs=2",
    "train.noise_seeds=1",
    "train.verbose=0",
]
ATTENTION_RUN_OVERRIDES = [
    "data.competition=classroom",
    "model.name=attention",
    *NOTEBOOK_TRAIN,
    "model.attention.units=8",
    "regularization.gaussian_noise=0.5",  # as experiments/default.toml, which make train reads
]


@pytest.fixture(scope="session")
def attention_run(tmp_path_factory: pytest.TempPathFactory, prepared_root: Path) -> Path:
    """The attention run of notebook 03's tiny configuration (shared_run)."""
    return shared_run(tmp_path_factory, prepared_root, "attention_run", ATTENTION_RUN_OVERRIDES)


# Two tiny repeated CVs (2 folds x 2 repeats) that differ in their model, the second with the statistics
# branch: the paired comparison, the blend and the MLflow read-back use them (tests/test_cv_compare.py,
# tests/test_blend.py, tests/test_tracking.py). When the read-back will run (the full tier's check,
# tests/tiers.py), MLflow tracking is on and the first fold of the second is evaluated for it; when
# make test skips it, neither is done: the comparison reads the run folders, never the MLflow store.
MLFLOW_READ_BACK = "tests/test_tracking.py::test_a_cv_and_its_report_in_mlflow_and_make_ui_serves_them"
CV_BASE = [*TINY, "train.epochs=1", "train.max_train_series=200", "train.noise_levels=[0.5]", "model.layers=1"]
CV_VARIANTS = (["model.units=4"], ["model.units=8", "model.window_stats=true"])


@dataclasses.dataclass(frozen=True)
class TrackedCVs:
    root: Path  # shared by every worker: read it, copy out what you change
    ids: tuple[str, str]
    evaluated: str  # the fold run make evaluate reported on (only when the MLflow read-back runs)


@pytest.fixture(scope="session")
def tracked_cvs(tmp_path_factory: pytest.TempPathFactory) -> TrackedCVs:
    from pipeline.runs import registry

    read_back = tiers.runs_everything() or not tiers.unchanged_since_recorded_pass(MLFLOW_READ_BACK, tiers.recorded())
    tracking = "TRACKING=" if read_back else "TRACKING=off"

    def build(folder: Path) -> None:
        (folder / "data").symlink_to(built_once(tmp_path_factory, "prepared", make_data_prepare) / "data")
        for variant in CV_VARIANTS:
            sets = " ".join([f"paths.root={folder}", *CV_BASE, *variant])
            result = run_make("cv", "FOLDS=2", "REPEATS=2", tracking, f"SET={sets}")
            assert result.returncode == 0, result.stderr[-3000:]
            assert "[repeat 2/2, fold 2/2]" in result.stdout
        if read_back:
            folds = json.loads((folder / "runs" / ids[1] / "run.json").read_text())["folds"]
            evaluated = run_make("evaluate", f"RUN={folds[0]}", tracking, f"SET=paths.root={folder}")
            assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    ids = tuple(
        registry.cv_id_for(load_config("experiments/default.toml", [*CV_BASE, "cv.folds=2", "cv.repeats=2", *variant]))
        for variant in CV_VARIANTS
    )
    root = built_once(tmp_path_factory, "tracked_cvs", build)
    folds = json.loads((root / "runs" / ids[1] / "run.json").read_text())["folds"]
    return TrackedCVs(root, ids, folds[0])


# The slowest files first (docs/testing.md, "Where the time goes": make test's slowest six, then those
# the full tier makes slow): the workers take a file at a time in collection order, so a slow file
# taken last keeps one worker busy while the others idle.
SLOWEST_FIRST = (
    "test_models.py",
    "test_train.py",
    "test_cv_compare.py",
    "test_make.py",
    "test_artifacts.py",
    "test_submit.py",
    "test_tune.py",
    "test_backends.py",
    "test_honest_folds.py",
    "test_transcribe.py",
    "test_recording.py",
    "test_notebooks.py",
    "test_evaluate.py",
    "test_gpu_check.py",
    "test_blend.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept
    if tiers.runs_everything():
        return
    record = tiers.recorded()
    for item in items:
        key = tiers.test_key(item.nodeid)
        if key in tiers.FULL_TIER and (passed := tiers.unchanged_since_recorded_pass(key, record)):
            reason = f"full tier: every file it covers is unchanged since it passed ({passed}); make test-all runs it"
            item.add_marker(pytest.mark.skip(reason=reason))


# make test-all records the full tier's fingerprints when the whole suite passed (tests/tiers.py);
# under xdist the controller sees every worker's reports.
TIER_RESULTS: dict[str, set[str]] = {"passed": set(), "failed": set()}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if result := tiers.tier_result(report.nodeid, report.when, report.outcome):
        TIER_RESULTS[result].add(tiers.test_key(report.nodeid))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or not tiers.runs_everything():
        return
    if exitstatus == 0 and tiers.complete_pass(TIER_RESULTS["passed"], TIER_RESULTS["failed"]):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        tiers.record_passes(f"{datetime.date.today()}, at {commit.stdout.strip() or 'no commit'}")
        print(f"\nthe full tier passed: its fingerprints written to {tiers.FULL_TIER_RECORD} (commit it)")
