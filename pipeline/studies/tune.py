"""`make tune [EXP=...] [TRIALS=20] [JOBS=1] [STORAGE=<database URL>]`: an Optuna search, chosen on CV only.

Each trial draws a configuration from the experiment's search space (`tune.space`, see
pipeline/config.py), cross-validates it (`make cv`: its fold runs are ordinary runs of the
registry, reused when a trial draws a configuration already trained) and scores it by the CV
selection score: mean validation-fold accuracy at the competition's test noise. A Keras callback
reports each epoch's score to Optuna's median pruner, which stops hopeless trials; the run it
stopped is marked pruned (`make runs` shows it), and the trial is recorded as pruned.

Storage: an SQLite file runs/tune/<study>.db by default (no server to start). With
`STORAGE=postgresql+psycopg://user@host/db` workers on several machines share one study: each runs
`make tune STORAGE=...` against the same prepared data. `JOBS=N` starts N local worker processes on
one storage. The study stops at `tune.trials` finished (complete or pruned) trials, all workers
together. Every running trial beats a heartbeat; one silent for tune.grace_seconds (its worker was
killed) is failed and queued again for a live worker, which resumes its fold runs where runs/ is
shared. A trial opened beyond the count, or drawing a configuration another worker is training, is
closed untrained, as failed, with the reason in its `skipped` attribute. docs/tracking.md has the
rules and a worked example.

The best trial becomes runs/tune/<study>.toml: an experiment file for `make train EXP=...`
(or `make cv EXP=...`). Watch a study live with optuna-dashboard:
`pip install optuna-dashboard && optuna-dashboard sqlite:///runs/tune/<study>.db`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import Config, ConfigError, load_config
from pipeline.data.datasets import PROTOCOL_NESTED
from pipeline.files import atomic_file, short_hash
from pipeline.log import log
from pipeline.progress import Progress
from pipeline.runs import tracking
from pipeline.runs.folder import RunFolder
from pipeline.runs.registry import cv_id_for, run_id_for
from pipeline.stages.cv_compare import fold_scores, paired_comparison

# ---- the search space (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    key: str  # a config key, e.g. regularization.dropout
    kind: str  # int | float | choice
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()


def field_type(key: str) -> Any:
    """The declared type of a config key (`model.units` -> int), an architecture's own settings
    included (`model.cnn_lstm.filters` -> int)."""
    section, _, name = key.partition(".")
    sections = typing.get_type_hints(Config)
    if section not in sections or not dataclasses.is_dataclass(sections[section]):
        raise ConfigError(f"tune.space: unknown config section in {key!r}")
    owner, (name, _, inner) = sections[section], name.partition(".")
    if section == "model" and inner:
        from pipeline.models.registry import MODELS

        spec = MODELS.get(name)
        if spec is None or spec.settings is None:
            raise ConfigError(f"tune.space: unknown config key {key!r}")
        owner, name = spec.settings, inner
    fields = typing.get_type_hints(owner)
    if name not in fields or name == "settings":
        raise ConfigError(f"tune.space: unknown config key {key!r}")
    return fields[name]


def parse_space(entries: tuple[str, ...]) -> list[Parameter]:
    """`tune.space` entries -> parameters, typed by the config keys they set."""
    parameters = []
    for entry in entries:
        key, separator, text = entry.partition("=")
        key, text = key.strip(), text.strip()
        if not separator or not text:
            raise ConfigError(f"tune.space entry {entry!r}: expected key=low..high, key=log:low..high or key=a|b|c")
        kind = field_type(key)
        if "|" in text or kind in (str, bool):
            choices = tuple(
                load_config(None, [f"{key}={choice.strip()}"]).to_dict()[key.split(".")[0]][key.split(".")[1]]
                for choice in text.split("|")
            )
            parameters.append(Parameter(key, "choice", choices=choices))
            continue
        log = text.startswith("log:")
        low_text, dots, high_text = text.removeprefix("log:").partition("..")
        if not dots or kind not in (int, float):
            raise ConfigError(f"tune.space entry {entry!r}: a range needs a numeric key and low..high")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            raise ConfigError(f"tune.space entry {entry!r}: low and high must be numbers") from None
        if not low < high or (log and low <= 0):
            raise ConfigError(f"tune.space entry {entry!r}: need low < high (and low > 0 on a log scale)")
        parameters.append(Parameter(key, "int" if kind is int else "float", low, high, log))
    return parameters


def suggest(trial: Any, parameters: list[Parameter]) -> list[str]:
    """Draw one value per parameter from an Optuna trial; returns them as config overrides."""
    chosen = []
    for parameter in parameters:
        if parameter.kind == "choice":
            value = trial.suggest_categorical(parameter.key, list(parameter.choices))
        elif parameter.kind == "int":
            value = trial.suggest_int(parameter.key, int(parameter.low), int(parameter.high), log=parameter.log)
        else:
            # three significant digits: readable run ids and experiment files, finer than any effect here
            value = float(f"{trial.suggest_float(parameter.key, parameter.low, parameter.high, log=parameter.log):.3g}")
        chosen.append(f"{parameter.key}={json.dumps(value)}")
    return chosen


def experiment_toml(config: Config, title: str) -> str:
    """An experiment file holding every setting of `config` that differs from the defaults."""
    defaults, values = load_config().to_dict(), config.to_dict()
    lines = [f"# {title}", ""]
    for section, settings in values.items():
        if section in ("paths", "tune", "tracking") or not isinstance(settings, dict):
            continue
        changed = {
            key: value
            for key, value in settings.items()
            if value != defaults[section][key] and not (section == "cv" and key == "fold")
        }
        if changed:
            lines += [
                f"[{section}]",
                *(
                    f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}"
                    for key, value in changed.items()
                ),
                "",
            ]
    return "\n".join(lines)


# ---- the study -------------------------------------------------------------------------------------------


def study_name(config: Config, experiment: str | None) -> str:
    return config.tune.study or f"{config.data.competition}_{Path(experiment).stem if experiment else 'defaults'}"


def storage_url(config: Config, name: str) -> str:
    if config.tune.storage:
        return config.tune.storage
    folder = config.path("runs", "tune")
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / name}.db"


def shown_url(url: str) -> str:
    """A storage URL as errors show it: the password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: shown as given, it holds no recognizable password
        return url


def storage_errors(url: str) -> Any:
    """Turns a database that cannot be reached into one clear line naming it (nothing is written
    before the study opens; a worker stopped by this can simply be started again)."""
    import contextlib

    import sqlalchemy.exc

    @contextlib.contextmanager
    def translated() -> Any:
        try:
            yield
        except sqlalchemy.exc.OperationalError as error:
            reason = str(error.orig or error).strip().splitlines()[0]
            raise ConfigError(
                f"tune storage {shown_url(url)}: cannot reach the database ({reason}); "
                "start the worker again once it is back: finished trials are kept, a lost one is retried"
            ) from None
        except ModuleNotFoundError as error:
            raise ConfigError(f"tune storage {shown_url(url)}: no driver for it ({error})") from None

    return translated()


def open_study(config: Config, name: str) -> Any:
    """The study on its storage, with heartbeats: a trial whose worker stopped beating for
    tune.grace_seconds is failed and queued again (tune.retries times) by the next live worker."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=config.tune.startup_trials, n_warmup_steps=config.tune.warmup_epochs
    )
    # Optuna marks the heartbeat API experimental and warns on every use; the project pins its version.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    import sqlalchemy.exc

    url = storage_url(config, name)
    with storage_errors(url):
        for attempt in range(5):
            try:
                storage = optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=config.tune.heartbeat_seconds,
                    grace_period=config.tune.grace_seconds,
                    heartbeat_stale_trial_callback=RetryAndMirror(config),
                )
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers started together on a new database race to create Optuna's tables: the
                # loser finds them made, or half made, and tries again once the winner is done.
                if attempt == 4:
                    raise
                time.sleep(1.0 + attempt)
        return optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            pruner=pruner,
            sampler=trial_sampler(config, 0),
        )


class RetryAndMirror:
    """Queues a trial whose worker died again (Optuna's retry callback) and mirrors it, failed, into MLflow."""

    def __init__(self, config: Config) -> None:
        import optuna

        self.config = config
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=config.tune.retries)

    def __call__(self, study: Any, trial: Any) -> None:
        self.retry(study, trial)
        tracking.mirror_trial(self.config, study.study_name, trial)


def trial_sampler(config: Config, number: int) -> Any:
    """TPE seeded by the trial's number: workers started alike (two machines, each `make tune`) draw
    different configurations, and a one-worker study draws the same ones every time."""
    import optuna

    return optuna.samplers.TPESampler(seed=config.tune.seed + number)


def check_base(study: Any, config: Config, name: str) -> None:
    """A study's trials are comparable only when they share everything outside the search space:
    the first worker records that base, and a study reopened with another base is refused."""
    searched = {parameter.key for parameter in parse_space(config.tune.space)}
    settings = {
        key: value
        for key, value in flatten_config(config).items()
        if key not in searched
        and not key.startswith(
            ("paths.", "tracking.", "tune.trials", "tune.storage", "tune.heartbeat", "tune.grace", "tune.retries")
        )
    }
    base = short_hash(settings, 16, default=str)
    recorded = study.user_attrs.get("base")
    if recorded is None:
        study.set_user_attr("base", base)
        study.set_user_attr("protocol", PROTOCOL_NESTED)
    elif "protocol" not in study.user_attrs:  # its trials' folds chose on the subjects they were scored on
        raise ConfigError(
            f"study {name} was run before nested selection (each trial's folds chose their epoch on the subjects they "
            "were scored on): its scores cannot be compared with new trials; start another with SET=tune.study=<new name>"
        )
    elif recorded != base:
        raise ConfigError(
            f"study {name} was run with other settings outside its search space; continue "
            "it with the same EXP and SET, or start another with SET=tune.study=<new name>"
        )


def flatten_config(config: Config) -> dict[str, Any]:
    """Every config key with its value, an architecture's own settings as model.<name>.<key>."""
    flat: dict[str, Any] = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(config.to_dict(), "")
    return flat


def pruning_callback(trial: Any, config: Config, fold: int) -> Any:
    """Reports every epoch's monitored score (on the fold run's inner validation split, which chooses) of the fold run `config` (the `fold`-th of its CV) to the
    trial; stops the run when Optuna's pruner says so, marking it pruned (it stays incomplete: a later
    trial of the same config resumes it)."""
    import keras
    import optuna

    monitor = "val_noisy_accuracy" if config.train.select_on == "noisy" else "val_clean_accuracy"
    run = RunFolder.of(config, run_id_for(config))

    class PruneHopeless(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            step = fold * config.train.epochs + epoch
            trial.report(float((logs or {})[monitor]), step)
            if trial.should_prune():
                run.mark_pruned(
                    {"study": trial.study.study_name, "trial": trial.number, "fold": fold, "epoch": epoch + 1}
                )
                raise optuna.TrialPruned(f"trial {trial.number} pruned at fold {fold + 1}, epoch {epoch + 1}")

    return PruneHopeless()


class SkippedTrial(Exception):
    """A trial closed untrained (failed, with the reason in its `skipped` attribute)."""


def trial_counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {state.name: sum(trial.state == state for trial in trials) for state in TrialState}


def optimize(
    study: Any,
    base: Config,
    experiment: str | None,
    base_overrides: list[str],
    trials: int,
    poll: float = 0.0,
    workers: int = 1,
) -> None:
    """One worker: run trials until the study holds `trials` finished ones (complete or pruned), all
    workers together. While the others' running trials would make up the rest, wait and watch them:
    one whose worker died is failed after the grace period and queued again, and this worker runs it.
    Each trial it starts prints a progress line: the study's finished trials and the time left, its
    own trials' mean time shared among `workers`."""
    from pipeline.stages.cv import cross_validate

    parameters = parse_space(base.tune.space)
    poll = poll or base.tune.heartbeat_seconds
    opened: list[int] = []  # the trials this worker ran, mirrored into MLflow as each ends
    progress = Progress(trials, workers)

    def objective(trial: Any) -> float:
        opened.append(trial.number)
        import keras
        import optuna
        from optuna.trial import TrialState

        counts = trial_counts(study)
        others_running = counts["RUNNING"] - 1
        if counts["COMPLETE"] + counts["PRUNED"] + others_running >= trials:  # another worker took the last one
            trial.set_user_attr("skipped", f"beyond tune.trials={trials}; nothing trained")
            raise SkippedTrial(trial.number)
        study.sampler = trial_sampler(base, trial.number)
        chosen = suggest(trial, parameters)
        config = load_config(experiment, [*base_overrides, *chosen])
        cv_id = cv_id_for(config)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        twin = next(
            (t.number for t in running if t.number != trial.number and t.user_attrs.get("cv_id") == cv_id), None
        )
        if twin is not None:  # the same configuration is being trained by another worker right now
            trial.set_user_attr("skipped", f"the configuration of running trial {twin}; nothing trained")
            raise SkippedTrial(trial.number)
        trial.set_user_attr("overrides", chosen)
        trial.set_user_attr("cv_id", cv_id)
        progress.step(f"trial {trial.number}: {' '.join(chosen)} ...", done=counts["COMPLETE"] + counts["PRUNED"])
        frozen = next(other for other in study.get_trials(deepcopy=False) if other.number == trial.number)
        retried = frozen.system_attrs.get("failed_trial")  # set by RetryHeartbeatStaleTrialCallback
        if retried is not None:
            log.info(f"trial {trial.number}: retrying trial {retried}, whose worker stopped")
        try:
            folder = cross_validate(
                config,
                experiment=f"tune:{study.study_name}",
                callbacks_for=lambda run_config, index: [pruning_callback(trial, run_config, index)],
            )
        except optuna.TrialPruned as pruned:
            keras.backend.clear_session()
            log.info(f"trial {trial.number}: {pruned}")
            raise
        score = RunFolder(folder).metrics()["selection"]["score"]
        # the per-fold scores travel with the trial, so that any worker can pair two trials' folds
        folds = fold_scores(config, folder.name)
        trial.set_user_attr("fold_scores", folds.scores)
        trial.set_user_attr("held_out_per_train", folds.held_out_per_train)
        done = sum(trial_counts(study)[state] for state in ("COMPLETE", "PRUNED")) + 1
        log.info(
            f"trial {trial.number} ({done} of {trials} finished): CV selection score {score:.4f} with {' '.join(chosen)}"
        )
        return score

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # as in open_study
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again
        counts = trial_counts(study)
        finished = counts["COMPLETE"] + counts["PRUNED"]
        if finished >= trials:
            return
        if finished + counts["RUNNING"] >= trials and not counts["WAITING"]:
            time.sleep(poll)  # the others' trials make up the rest; wait in case one of them dies
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(SkippedTrial,), gc_after_trial=True)
        finally:
            for trial in study.get_trials(deepcopy=False):
                if trial.number in opened:
                    tracking.mirror_trial(base, study.study_name, trial)
            opened.clear()


def chosen_among(trials: int) -> str:
    """How to read the best trial's CV score: the maximum of `trials` readings of the same folds."""
    return (
        f"chosen among {trials} trials on these very folds (optimistic: the maximum of {trials} readings, "
        "not an estimate of the chosen configuration; cross-validate it again on other repeats, or read its test score)"
    )


def against_runner_up(finished: list[Any]) -> str:
    """The best finished trial against the second best, paired fold by fold (the trials of one study
    share its folds): a sentence for the report, or why there is none."""
    ranked = sorted(
        (trial for trial in finished if trial.user_attrs.get("fold_scores")), key=lambda trial: -trial.value
    )
    if len(ranked) < 2:
        return "no runner-up with per-fold scores to pair the best trial with"
    best, second = ranked[0], ranked[1]
    a, b = best.user_attrs["fold_scores"], second.user_attrs["fold_scores"]
    if len(a) != len(b):
        return f"trials {best.number} and {second.number} were cut into other folds: not paired"
    result = paired_comparison(a, b, best.user_attrs["held_out_per_train"])
    verdict = result.verdict_naming(f"trial {best.number}", f"trial {second.number}")
    return (
        f"against the runner-up, trial {second.number} (CV {second.value:.4f}), paired fold by fold: mean difference "
        f"{result.mean:+.4f}, 95% interval [{result.low:+.4f}, {result.high:+.4f}] (corrected resampled t-test): {verdict}; "
        "both were picked by these very fold scores, so the interval is optimistic"
    )


def write_best(study: Any, base: Config, experiment: str | None, base_overrides: list[str], name: str) -> Path | None:
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not finished:
        log.info(f"study {name}: no finished trial yet")
        return None
    best = max(finished, key=lambda trial: trial.value)
    config = load_config(experiment, [*base_overrides, *best.user_attrs["overrides"]])
    target = base.path("runs", "tune", f"{name}.toml")
    title = (
        f"Best trial ({best.number}) of the Optuna study {name}: CV selection score {best.value:.4f} "
        f"({config.cv.folds} folds), {chosen_among(len(finished))}"
    )
    paired = against_runner_up(finished)
    with atomic_file(target) as temp:
        temp.write_text(experiment_toml(config, f"{title}\n# {paired}"))
    counts = {
        state.name.lower(): sum(trial.state == state for trial in study.get_trials(deepcopy=False))
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    print(
        f"study {name}: {counts}; best trial {best.number}, CV selection score {best.value:.4f} "
        f"({chosen_among(len(finished))}): {' '.join(best.user_attrs['overrides'])}"
    )
    print(f"best trial {best.number} {paired}")
    log.info(f"wrote {target}: `make train EXP={target}` trains it")
    return target


def tune(
    config: Config, experiment: str | None, base_overrides: list[str], jobs: int = 1, worker: int = 0
) -> Path | None:
    """Run the study with `jobs` local worker processes (this one included); returns the best trial's experiment file."""
    if jobs < 1:
        raise ConfigError(f"JOBS={jobs}: need at least one worker")
    parse_space(config.tune.space)  # a bad space fails before any worker starts
    name = study_name(config, experiment)
    study = open_study(config, name)  # created once here, before the workers load it
    check_base(study, config, name)
    command = [
        sys.executable,
        "-m",
        "pipeline.studies.tune",
        *(["--exp", experiment] if experiment else []),
        *(f"--set={item}" for item in base_overrides),
    ]
    children = [subprocess.Popen([*command, f"--worker={index}"]) for index in range(1, jobs)] if worker == 0 else []
    try:
        with storage_errors(storage_url(config, name)):
            optimize(study, config, experiment, base_overrides, config.tune.trials, workers=jobs)
    finally:
        failed = [child.args for child in children if child.wait() != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} tune worker(s) failed; their output is above")
    return write_best(study, config, experiment, base_overrides, name) if worker == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.tune", __doc__)
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes sharing the study (JOBS=)")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return run_stage(
        lambda config: tune(config, args.exp, overrides(args), args.jobs, args.worker),
        args,
        keras=True,
    )


if __name__ == "__main__":
    sys.exit(main())
