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
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import Config, load_config
from pipeline.data.datasets import check_run_data, load_training_data
from pipeline.errors import DataError
from pipeline.files import short_hash
from pipeline.stages import tracking
from pipeline.stages.runs import LINEAGE, METRICS, MODEL, finished_run, resolve_runs, run_config, write_run
from pipeline.stages.training import test_scores, test_summary, validation_scores

SAME = ("competition", "classes", "channels", "series_shape", "data_inputs")  # what members must share


def ensemble_id(competition: str, members: list[str]) -> str:
    return f"{competition}_ensemble{len(members)}_{short_hash(members)}"


def check_members(lineages: list[dict[str, Any]]) -> None:
    """Members can be averaged only when they read the same windows and predict the same classes."""
    first = lineages[0]
    for lineage in lineages[1:]:
        for key in SAME:
            if lineage.get(key) != first.get(key):
                raise DataError(
                    f"runs {first['run_id']} and {lineage['run_id']} differ in {key} "
                    f"({first.get(key)!r} against {lineage.get(key)!r}): they cannot be averaged into one model"
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


def build_ensemble(config: Config, run_ids: list[str]) -> Path:
    from pipeline import models

    members = resolve_runs(config, run_ids)
    if len(members) < 2:
        raise DataError(f"RUN={' '.join(run_ids) or '(none)'}: an ensemble needs two runs or more (or a CV, cv:<id>)")
    if len(set(members)) != len(members):
        raise DataError(f"RUN={' '.join(run_ids)}: a run appears twice")
    lineages = [json.loads((finished_run(config, member) / LINEAGE).read_text()) for member in members]
    check_members(lineages)
    if lineages[0]["competition"] != config.data.competition:
        raise DataError(
            f"the runs were trained on {lineages[0]['competition']!r}; set COMPETITION={lineages[0]['competition']}"
        )
    check_run_data(config, members[0], lineages[0])
    run_id = ensemble_id(config.data.competition, members)
    run_dir = config.path("runs", run_id)
    if (run_dir / METRICS).is_file():
        print(f"{run_dir}: this ensemble exists (its members are the same runs)")
        return run_dir
    model = averaging_model(
        [models.load_model(str(finished_run(config, member) / MODEL)) for member in members],
        tuple(lineages[0]["series_shape"]),
    )
    # Scored on the first member's competition with its plain validation split (not a fold of it).
    first = run_config(config, finished_run(config, members[0]))
    base = load_config(None, [f"paths.root={config.root}", *config_without_fold(first)])
    data = load_training_data(base)
    folds_seen = any(lineage.get("kind") == "cv" for lineage in lineages) or any(
        run_config(config, finished_run(config, member)).cv.fold >= 0
        or run_config(config, finished_run(config, member)).cv.refit
        for member in members
    )
    metrics: dict[str, Any] = {
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
    lineage = {
        **lineages[0],
        "run_id": run_id,
        "kind": "ensemble",
        "members": members,
        "model": f"ensemble{len(members)}",
        "regularizer": "+".join(sorted({lineage["model"] for lineage in lineages})),
        "parameters": int(model.count_params()),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run(run_dir, model, metrics, {"config.json": base.to_dict(), LINEAGE: lineage})
    levels = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["validation"].items())
    print(f"wrote {run_dir}: the mean of {len(members)} runs; validation accuracy by noise level (a report)  {levels}")
    if test is not None:
        print(test_summary(test))
    tracking.mirror_run(config, run_dir, "ensemble")
    return run_dir


def config_without_fold(config: Config) -> list[str]:
    """A member's config as overrides, with the plain validation split (cv.fold -1, no refit)."""
    from pipeline.stages.runs import config_overrides

    tree = config.to_dict()
    tree["cv"] = {**tree["cv"], "fold": -1, "refit": False, "repeat": 0}
    return config_overrides(tree)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.ensemble", __doc__)
    parser.add_argument("--run", default="", help="run ids separated by spaces, or cv:<cv id> for a CV's fold models")
    args = parser.parse_args(argv)
    return run_stage(lambda: build_ensemble(load_config(args.exp, overrides(args)), args.run.split()), keras=True)


if __name__ == "__main__":
    sys.exit(main())
