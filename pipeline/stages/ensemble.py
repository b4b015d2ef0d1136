"""`make ensemble RUN="id1 id2 ..."` (or `RUN=cv:<cv id>`): finished runs -> one run whose model averages them.

The members' models (several architectures, seeds, or a CV's fold models) are wrapped into one
Keras model that feeds the same window to each and averages their class probabilities; it is saved
as runs/<competition>_ensemble<k>_<hash of the members>/ like any run (model.keras, run.json,
config.json, metrics.json), so `make predict`, `make evaluate`, `make export` (one LiteRT file)
and `make recording` take its id as they take a run's. Each member keeps its own normalization
inside its model, so the ensemble reads raw windows as every run does.

Its metrics are reports, never a selection: an ensemble run has no selection score and is never
"the best run" (choose its members by CV first: `make cv-compare`, `make tune`). Its validation
accuracy is measured on the first member's validation split; for fold models, whose folds cover
that split, it is optimistic and says so (`metrics.json` "note"). The organizer-side test scores
are reported as for any run.

`make ensemble RUN="cv:A cv:B ..."` (two or more cross-validations cut into the same folds) is the
ensemble of those configurations, cross-validated: fold run i averages fold run i of every CV and is
scored on fold i's held-out series with the selection a fold run has, and the result is a CV entry
(runs/<competition>_cv<k>[x<r>]_ensemble<m>_<hash>/, kind "cv"). So an ensemble of configurations
is chosen like a configuration, by `make cv-compare A=<its id> B=<a member CV>`, and `make predict
RUN=cv:<its id>` (or `make ensemble RUN=cv:<its id>`, one model) uses every fold model of every member.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config, load_config
from pipeline.data.datasets import check_run_data, fold_protocol, load_training_data, protocol_mismatch, split_record
from pipeline.errors import DataError
from pipeline.files import short_hash
from pipeline.log import log
from pipeline.runs import tracking
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import finished_run, resolve_runs, run_config
from pipeline.runs.scoring import selection_score, test_scores, test_summary, validation_scores
from pipeline.stages.cv import cv_scores

SAME = ("competition", "classes", "channels", "series_shape", "data_inputs")  # what members must share


def ensemble_id(competition: str, members: list[str]) -> str:
    return f"{competition}_ensemble{len(members)}_{short_hash(members)}"


def check_members(lineages: list[Lineage]) -> None:
    """Members can be averaged only when they read the same windows and predict the same classes."""
    first = lineages[0]
    for lineage in lineages[1:]:
        for key in SAME:
            if getattr(lineage, key) != getattr(first, key):
                raise DataError(
                    f"runs {first.run_id} and {lineage.run_id} differ in {key} "
                    f"({getattr(first, key)!r} against {getattr(lineage, key)!r}): they cannot be averaged into one model"
                )


def averaging_model(members: list[Any], shape: tuple[int, ...]) -> Any:
    """One Keras model: the window to every member, the mean of their probabilities out."""
    import keras

    window = keras.Input(shape=shape, name="window")
    # each member under a name of its own (two runs of one architecture carry the same model name)
    renamed = [
        keras.Model(member.inputs[0], member.outputs[0], name=f"member_{index}") for index, member in enumerate(members)
    ]
    outputs = [member(window) for member in renamed]
    averaged = keras.layers.Average(name="mean_probability")(outputs)
    return keras.Model(window, averaged, name=f"ensemble{len(members)}")


def build_ensemble(config: Config, run_ids: list[str], on_fold: bool = False) -> Path:
    """The ensemble run of `run_ids` (a `cv:` id stands for its fold models). `on_fold`: the runs are
    fold runs of one and the same fold (a fold of a cross-validated ensemble); it is then scored on
    that fold's held-out series with their selection, like a fold run, instead of the plain split."""
    members = list(run_ids) if on_fold else resolve_runs(config, run_ids)
    if len(members) < 2:
        raise DataError(f"RUN={' '.join(run_ids) or '(none)'}: an ensemble needs two runs or more (or a CV, cv:<id>)")
    if len(set(members)) != len(members):
        raise DataError(f"RUN={' '.join(run_ids)}: a run appears twice")
    lineages = [RunFolder(finished_run(config, member)).lineage() for member in members]
    check_members(lineages)
    if lineages[0].competition != config.data.competition:
        raise DataError(
            f"the runs were trained on {lineages[0].competition!r}; set COMPETITION={lineages[0].competition}"
        )
    check_run_data(config, members[0], lineages[0].data_inputs)
    folder = RunFolder.of(config, ensemble_id(config.data.competition, members))
    with folder.writing():
        if folder.finished:
            log.info(f"{folder.path}: this ensemble exists (its members are the same runs)")
            return folder.path
        write_ensemble(config, folder, members, lineages, on_fold)
    tracking.mirror_run(config, folder.path, "ensemble")
    return folder.path


def write_ensemble(
    config: Config, folder: RunFolder, members: list[str], lineages: list[Lineage], on_fold: bool
) -> None:
    """Average the members into one model, score it and write its run folder."""
    model = averaging_model(
        [RunFolder(finished_run(config, member)).load_model() for member in members],
        tuple(lineages[0].series_shape),
    )
    first = run_config(config, finished_run(config, members[0]))
    if on_fold:  # scored on the fold's held-out series, which no member trained on
        base = first
        data = load_training_data(base)
        metrics: dict[str, Any] = {
            "members": members,
            "validation": validation_scores(model, base, data),
            "selection": selection_score(model, base, data),
            "best_validation": None,
            "note": f"{data.validation}: held out from every member's training and choices; the selection of a fold run",
        }
        split = split_record(data) if data.protocol is not None else None
    else:  # scored on the first member's competition with its plain validation split (not a fold of it)
        split = None
        base = load_config(None, [f"paths.root={config.root}", *config_without_fold(first)])
        data = load_training_data(base)
        member_cvs = [run_config(config, finished_run(config, member)).cv for member in members]
        folds_seen = any(lineage.kind == "cv" for lineage in lineages) or any(
            cv.fold >= 0 or cv.refit for cv in member_cvs
        )
        metrics = {
            "members": members,
            "selection": None,  # never "the best run": an ensemble's members are chosen by CV
            "best_validation": None,
            "validation": validation_scores(model, base, data),
            "note": (
                "members include fold or refit models whose training covered these validation series: optimistic, a report only"
                if folds_seen
                else "validation split held out from every member's training; a report, not a selection"
            ),
        }
    test = test_scores(model, base, data)
    if test is not None:
        metrics["test"] = test
    lineage = dataclasses.replace(
        lineages[0],
        run_id=folder.name,
        kind="ensemble",
        members=members,
        model=f"ensemble{len(members)}",
        regularizer="+".join(sorted({lineage.model for lineage in lineages})),
        parameters=int(model.count_params()),
    )
    folder.finish(model, metrics, config=base.to_dict(), lineage=lineage, split=split)
    levels = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["validation"].items())
    scored = f"selection score {metrics['selection']['score']:.4f}; " if on_fold else ""
    log.info(
        f"wrote {folder.path}: the mean of {len(members)} runs; {scored}validation accuracy by noise level (a report)  {levels}"
    )
    if test is not None:
        log.info(test_summary(test))


def combined_cv_id(config: Config, first_config: dict[str, Any], tag: str, members: list[str]) -> str:
    """<competition>_cv<k>[x<r>]_<tag>_<hash of the members>: a CV entry combining cross-validations
    cut like the first (its config.json `first_config`)."""
    repeats = int(first_config["cv"].get("repeats", 1))
    repeat_tag = f"x{repeats}" if repeats > 1 else ""
    return f"{config.data.competition}_cv{first_config['cv']['folds']}{repeat_tag}_{tag}_{short_hash(members)}"


def cut_alike(config: Config, cv_ids: list[str]) -> list[Lineage]:
    """The lineages of finished cross-validations that were cut into the same folds and scored on
    the same selections (what combining their fold runs fold by fold needs); otherwise one line."""
    if len(set(cv_ids)) != len(cv_ids):
        raise DataError(f"RUN={' '.join(cv_ids)}: a cross-validation appears twice")
    lineages, definitions = [], []
    for cv_id in cv_ids:
        lineage = RunFolder(finished_run(config, cv_id)).lineage()
        if lineage.kind != "cv":
            raise DataError(f"{config.path('runs', cv_id)}: not a cross-validation; give CV ids only (`make runs`)")
        lineages.append(lineage)
        definitions.append(
            [RunFolder(finished_run(config, fold)).metrics()["selection"]["definition"] for fold in lineage.folds]
        )
    check_members(lineages)
    for cv_id, folds in zip(cv_ids[1:], definitions[1:]):
        if fold_protocol(folds[0]) != fold_protocol(definitions[0][0]):
            raise DataError(protocol_mismatch(cv_ids[0], cv_id, definitions[0][0], folds[0]))
        if folds != definitions[0]:
            raise DataError(
                f"{cv_ids[0]} and {cv_id} were not cut into the same folds or not scored on the same selection "
                "(fold count, repeats, validation subjects, noise level or draws): cross-validate both with the same cv and data settings"
            )
    return lineages


def cross_validated_ensemble(config: Config, names: list[str]) -> Path:
    """`make ensemble RUN="cv:A cv:B ..."`: the ensemble of several cross-validated configurations,
    cross-validated itself. Fold run i of the result averages fold run i of every CV (they must have
    been cut into the same folds) and is scored on that fold's held-out series as a fold run is, so
    the result is a CV entry like `make cv`'s: `make cv-compare A=<its id> B=<one of the CVs>` pairs
    it fold by fold, and `make predict RUN=cv:<its id>` averages every fold model of every member."""
    cv_ids = [name.removeprefix("cv:") for name in names]
    lineages = cut_alike(config, cv_ids)
    first_config = RunFolder.of(config, cv_ids[0]).config()
    cv_id = combined_cv_id(config, first_config, f"ensemble{len(cv_ids)}", cv_ids)
    folder = RunFolder.of(config, cv_id)
    if folder.finished:
        log.info(f"{folder.path}: this cross-validated ensemble exists (its members are the same CVs)")
        return folder.path
    fold_dirs = []
    for index, fold_members in enumerate(zip(*(lineage.folds for lineage in lineages))):
        log.info(f"[fold run {index + 1}/{len(lineages[0].folds)}] {cv_id}")
        fold_dirs.append(build_ensemble(config, list(fold_members), on_fold=True))
    return finish_combined_cv(
        config,
        cv_id,
        first_config,
        lineages,
        fold_dirs,
        "ensemble",
        cv_ids,
        "+".join(lineage.model for lineage in lineages),
    )


def finish_combined_cv(
    config: Config,
    cv_id: str,
    first_config: dict[str, Any],
    lineages: list[Lineage],
    fold_dirs: list[Path],
    experiment: str,
    members: list[str],
    regularizer: str,
    refit: str | None = None,
) -> Path:
    """Write the CV entry of a combination of cross-validations (a cross-validated ensemble or blend)
    from its fold runs (and its `refit` run, if any), mirror it, and say how to compare and use it."""
    metrics = cv_scores([RunFolder(run_dir).metrics() for run_dir in fold_dirs])
    metrics["selection"]["repeats"] = int(first_config["cv"].get("repeats", 1))
    metrics["members"] = members
    first = lineages[0]
    lineage = Lineage(
        run_id=cv_id,
        kind="cv",
        experiment=experiment,
        members=members,
        model=f"{experiment}{len(members)}",
        regularizer=regularizer,
        folds=[run_dir.name for run_dir in fold_dirs],
        refit=refit,
        **first.data_fields(),
    )
    folder = RunFolder.of(config, cv_id)
    with folder.writing():
        folder.finish_entry(first_config, lineage, metrics)
    tracking.mirror_cv(config, folder.path)
    selection = metrics["selection"]
    log.info(
        f"cross-validated {cv_id}: selection score {selection['score']:.4f} ± {selection['std']:.4f} over {len(fold_dirs)} "
        f"fold runs; compare it paired: make cv-compare A={cv_id} B={members[0]}; predict with it: make predict RUN=cv:{cv_id}"
        + (f"; its refit on every labeled series: make predict RUN={refit}" if refit else "")
    )
    return folder.path


def is_cross_validation(config: Config, name: str) -> bool:
    lineage = RunFolder.of(config, name.removeprefix("cv:")).lineage_or_none()
    return lineage is not None and lineage.kind == "cv"


def make_ensemble(config: Config, names: list[str]) -> Path:
    """Several CVs: a cross-validated ensemble; otherwise one ensemble run of the runs (or fold models)."""
    if len(names) >= 2 and all(is_cross_validation(config, name) for name in names):
        return cross_validated_ensemble(config, names)
    return build_ensemble(config, names)


def config_without_fold(config: Config) -> list[str]:
    """A member's config as overrides, with the plain validation split (cv.fold -1, no refit)."""
    from pipeline.runs.registry import config_overrides

    tree = config.to_dict()
    tree["cv"] = {**tree["cv"], "fold": -1, "refit": False, "repeat": 0}
    return config_overrides(tree)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.ensemble", __doc__)
    parser.add_argument("--run", default="", help="run ids separated by spaces, or cv:<cv id> for a CV's fold models")
    args = parser.parse_args(argv)
    return run_stage(lambda config: make_ensemble(config, args.run.split()), args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
