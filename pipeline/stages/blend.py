"""`make blend RUN="cv:<cv id> peer:<name>[+copies] ..."`: recurrent models and peers in one noise-aware
blend, cross-validated.

MiniRocket and logistic regression are ahead of the recurrent models on clean series and collapse
under noise, where the recurrent model with its noise layer holds; a fixed blend weight serves one
end only. So a blend weighs its members by each series' own estimated noise level (the gate of
pipeline.models.blend: member weights softmax(a_m + b_m * level)).

Members: one or more finished cross-validations (`make cv`, or a cross-validated ensemble), cut
into the same folds, and one or more peers of `make peers` (`peer:<name>`, `+copies` adds
`peers.noised_copies` noised copies of its training series). Fold run i of the blend holds:
- fold run i of every CV member, as it is;
- each peer fitted on fold i's training part: what the recurrent fold run trained and chose on (a
  peer chooses nothing), as `make cv-compare` fits a peer on a fold;
- the noise estimator fitted on those clean training series;
- a gate fitted on out-of-fold predictions: the held-out series of every other fold whose subjects
  fold i's held-out series do not share (in one repeat, every other fold), each predicted by that
  fold's own members, which neither trained nor chose on them, at every level of GATE_LEVELS. With
  the weights (a spline in the level) it fits each member's temperature (since 2026-12-06), so a
  ridge's soft scores and a recurrent model's softmax are pooled as calibrated probabilities.
It is then scored on fold i's held-out series, which chose nothing, by the one selection function
every fold run is scored by. (Until 2026-12-06 the gate was fitted on fold i's chosen-on series: few
subjects, on which the recurrent member had chosen its epoch, so the gate trusted it more than its
held-out scores warranted; docs/training.md has the measurement.) So the blend is a CV entry like
`make cv`'s: `make cv-compare A=<blend id> B=<a member CV>` pairs it with its members fold by fold,
and `make predict RUN=cv:<blend id>` (and make evaluate, make recording) averages its fold blends.
`make export` refuses it (its peers are scikit-learn pipelines, its gate NumPy; `make ensemble` of
recurrent runs exports). Only CVs made under the nested protocol can be blended: under the old one
a fold's models chose on the series they were scored on, so their out-of-fold predictions flatter them.

`REFIT=1` (after `make cv REFIT=1` of each CV member) then builds the blend refit on every labeled
series, the Kaggle practitioner's last step: each CV's refit run, each peer fitted on every labeled
series, and one gate fitted on the out-of-fold predictions of every fold. Nothing is held out, so
it has no selection score and is never "the best run": the blend's CV speaks for it, and its test
scores are reports. `make predict RUN=<its id>` uses it.

Writes runs/<competition>_blend<m>_<hash>/ per fold (blend.pkl, config.json, run.json, split.json,
metrics.json with the gate's numbers and what it was fitted on, out_of_fold.npz with its members'
predictions on its held-out series, so a later `REFIT=1` reads them instead of loading and predicting
with every fold's members again), the refit's the same way (no out_of_fold.npz), and
runs/<competition>_cv<k>[x<r>]_blend<m>_<hash>/ (kind "cv"; its run.json names the refit).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.datasets import PROTOCOL_NESTED, TrainingData, load_training_data, split_record
from pipeline.data.signals import NoiseLevelEstimator
from pipeline.errors import DataError
from pipeline.files import short_hash
from pipeline.log import log
from pipeline.progress import Progress
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import finished_run, run_config
from pipeline.runs.scoring import selection_score, test_scores, test_summary, validation_scores
from pipeline.stages.cv_compare import PEER, peer_training_part
from pipeline.stages.ensemble import combined_cv_id, cut_alike, finish_combined_cv

REPORTED_LEVELS = (0.0, 0.5, 1.0)  # where the log shows each member's gate weight
# how a blend is made (part of its ids): its gate fitted on out-of-fold predictions, with each
# member's temperature and weights spline in the level, its peers fitted on what the recurrent fold
# run trained and chose on (since 2026-12-06; "out-of-fold" alone before: the gate linear in the
# level, no temperatures, peers fitted on the trained-on series only)
GATE_FITTED_ON = "out-of-fold"
BLEND_METHOD = f"{GATE_FITTED_ON}, member temperatures, spline in the level, peers on trained and chosen"


def split_members(names: list[str]) -> tuple[list[str], list[str]]:
    """RUN's words -> (CV ids, peer specs), refused in one line unless there are a CV and a peer."""
    from pipeline.models import baselines

    cv_ids = [name.removeprefix("cv:") for name in names if not name.startswith(PEER)]
    peers = [name.removeprefix(PEER) for name in names if name.startswith(PEER)]
    if not cv_ids or not peers:
        raise DataError(
            f"RUN={' '.join(names) or '(none)'}: a blend needs a cross-validation (cv:<id>, its folds are the "
            "blend's) and a peer (peer:<name>[+copies]); recurrent runs alone average into one model with make ensemble"
        )
    if len(set(peers)) != len(peers):
        raise DataError(f"RUN={' '.join(names)}: a peer appears twice")
    for peer in peers:
        baselines.peer_spec(peer)
    return cv_ids, peers


def gate_summary(model: Any) -> str:
    """Each member's weight at a few noise levels and its temperature, e.g.
    `peer:minirocket 0.81 / 0.35 / 0.06 (temperature 0.12)`."""
    weights = model.gate.weights(np.array(REPORTED_LEVELS))
    levels = " / ".join(f"{level:g}" for level in REPORTED_LEVELS)
    members = ", ".join(
        f"{name} {' / '.join(f'{w:.2f}' for w in weights[:, index])} (temperature {1 / model.gate.sharpness[index]:.3g})"
        for index, name in enumerate(model.names)
    )
    return f"gate weights at noise {levels}: {members}"


@dataclass
class Members:
    """A blend's members on one split (a fold run's, or the refit's), before the gate: the runs'
    Keras models, then the peers fitted on the split's training part."""

    runs: list[str]  # of one and the same split: fold run i of each CV member, or each CV's refit run
    config: Config  # the first run's config
    lineage: Lineage  # the first run's lineage: the blend's competition, classes and shapes
    data: TrainingData
    models: list[Any]
    peer_fits: dict[str, dict[str, Any]]
    estimator: NoiseLevelEstimator  # fitted on the split's clean training series


@dataclass
class OutOfFold:
    """Fold i's out-of-fold predictions, what the other folds' gates and the refit's are fitted on:
    each member's probabilities on its held-out series at every level of GATE_LEVELS, their labels
    and estimated levels. A fold blend keeps them in out_of_fold.npz (`arrays`)."""

    fold_runs: list[str]
    probabilities: list[np.ndarray]
    labels: np.ndarray
    levels: np.ndarray
    held_out: set[Any]  # the held-out subjects where the competition has subjects, else the series ids

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            **{f"member_{index}": member for index, member in enumerate(self.probabilities)},
            "labels": self.labels,
            "levels": self.levels,
            "fold_runs": np.array(self.fold_runs),
            "held_out": np.array(sorted(self.held_out, key=str)),  # integers (subjects) or strings (ids)
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OutOfFold:
        members = sorted((name for name in arrays if name.startswith("member_")), key=lambda name: int(name[7:]))
        held_out = arrays["held_out"]
        subjects = held_out.dtype.kind in "iu"
        return cls(
            [str(run) for run in arrays["fold_runs"]],
            [arrays[name] for name in members],
            arrays["labels"],
            arrays["levels"],
            {int(one) if subjects else str(one) for one in held_out},
        )


def fit_peers(config: Config, data: TrainingData, peers: list[str]) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Each peer fitted as `make cv-compare` fits it on a fold (`peer_training_part`: what the
    recurrent members trained and chose on), and its fit time, peak memory and series count."""
    from pipeline.models import baselines

    series, labels = peer_training_part(data)
    models, fits = [], {}
    for peer in peers:
        fit = baselines.fit_peer_spec(peer, config, series, labels, data.train_std, len(data.classes))
        log.info(f"    {PEER}{peer} fitted on {fit.series} series in {fit.seconds} s, peak memory {fit.peak_gib} GiB")
        models.append(fit.model)
        fits[peer] = {"seconds": fit.seconds, "peak_gib": fit.peak_gib, "series": fit.series}
    return models, fits


def load_members(config: Config, runs: list[str], peers: list[str], fold: bool) -> Members:
    """The members on the split of `runs` (all of one split): the runs' models and the peers fitted
    on its training part. `fold`: a fold run's split, refused unless it is of the nested protocol
    (under the old one a fold's models chose on the series they were scored on, so their
    out-of-fold predictions flatter them)."""
    first = RunFolder(finished_run(config, runs[0]))
    split = run_config(config, first.path)
    data = load_training_data(split)
    if fold and data.protocol != PROTOCOL_NESTED:
        raise DataError(
            f"{runs[0]}: not a fold run of the nested protocol (it chose on the series it was scored on, so "
            "its out-of-fold predictions flatter it); make cv again"
        )
    models: list[Any] = [RunFolder(finished_run(config, run)).load_model() for run in runs]
    fitted, peer_fits = fit_peers(split, data, peers)
    estimator = NoiseLevelEstimator.fit(data.train_series, data.train_std)
    return Members(runs, split, first.lineage(), data, [*models, *fitted], peer_fits, estimator)


def fold_members(config: Config, fold_runs: list[str], peers: list[str]) -> tuple[Members, OutOfFold]:
    """Fold i's members (`fold_runs`, of one and the same fold, and the peers fitted on its training
    part) and their out-of-fold predictions."""
    from pipeline.models.blend import gate_training_set, member_probabilities

    part = load_members(config, fold_runs, peers, fold=True)
    data = part.data
    series, labels, _ = gate_training_set(
        data.scored_series, data.scored_labels, part.config.data.noise_profile, data.train_std, part.config.train.seed
    )
    subjects = (data.subjects or {}).get("scored_on")
    held_out = {int(s) for s in subjects} if subjects is not None else {str(i) for i in data.scored_ids}
    predictions = OutOfFold(
        fold_runs,
        member_probabilities(part.models, series, batch_size=1024),
        labels,
        part.estimator.levels(series),
        held_out,
    )
    return part, predictions


def gate_sources(held_out: list[set[Any]]) -> list[list[int]]:
    """For each fold (its held-out subjects or ids), the folds whose out-of-fold predictions fit its
    gate: every other fold whose held-out series it shares none of; one line when there is none."""
    sources = [
        [j for j, other in enumerate(held_out) if j != i and not mine & other] for i, mine in enumerate(held_out)
    ]
    for index, found in enumerate(sources):
        if not found:
            raise DataError(
                f"fold run {index + 1}: every other fold shares its held-out series, so no gate can be fitted apart"
            )
    return sources


def gate_from(sources: list[OutOfFold], names: list[str]) -> tuple[Any, dict[str, Any]]:
    """The gate fitted on `sources`' out-of-fold predictions, and what metrics.json says of it."""
    from pipeline.models.blend import GATE_LEVELS, fit_gate

    gate = fit_gate(
        [np.concatenate([source.probabilities[m] for source in sources]) for m in range(len(names))],
        np.concatenate([source.labels for source in sources]),
        np.concatenate([source.levels for source in sources]),
    )
    record = {
        "coefficients": gate.coefficients.tolist(),
        "temperatures": (1 / gate.sharpness).tolist(),
        "weights": {f"{level:g}": row.tolist() for level, row in zip(GATE_LEVELS, gate.weights(GATE_LEVELS))},
        "fitted_on": f"{GATE_FITTED_ON}: the held-out series of {len(sources)} fold run(s), "
        f"{sum(len(source.labels) for source in sources)} predictions at the levels {list(GATE_LEVELS)}",
        "fitted_on_runs": [source.fold_runs[0] for source in sources],
        "fitted_on_held_out": sorted(set().union(*(source.held_out for source in sources)), key=str),
    }
    return gate, record


def blend_run_id(config: Config, runs: list[str], peers: list[str]) -> str:
    """A fold blend's (or the refit's) run id: its members and how it is made (a blend gated
    another way keeps its own id)."""
    names = [*runs, *(f"{PEER}{peer}" for peer in peers)]
    return f"{config.data.competition}_blend{len(names)}_{short_hash([*names, BLEND_METHOD])}"


def write_blend(
    config: Config,
    members: Members,
    peers: list[str],
    sources: list[OutOfFold],
    held_out: OutOfFold | None,
) -> Path:
    """A blend's run folder: `members` under the gate fitted on `sources`' out-of-fold predictions.
    `held_out`: a fold blend's own out-of-fold predictions, kept beside it; it is scored on its
    held-out series, which chose nothing. None: the refit on every labeled series, where nothing is
    held out, so it has no selection score and is never "the best run" (the CV of the blend speaks
    for it; its test scores are reports)."""
    from pipeline.models.blend import BlendModel

    folder = RunFolder.of(config, blend_run_id(config, members.runs, peers))
    names = [*members.runs, *(f"{PEER}{peer}" for peer in peers)]
    data = members.data
    gate, gate_record = gate_from(sources, names)
    model = BlendModel(members.models, names, gate, members.estimator, keras_members=list(range(len(members.runs))))
    metrics: dict[str, Any] = {"members": names, "gate": gate_record, "peers": members.peer_fits}
    if held_out is not None:
        metrics |= {
            "validation": validation_scores(model, members.config, data),
            "selection": selection_score(model, members.config, data),
            "note": "the gate was fitted on other folds' held-out series; the held-out fold it is scored on chose nothing",
        }
        split = split_record(data)
    else:
        metrics |= {
            "validation": {},
            "selection": None,
            "note": "a refit: every labeled series trained its members, and its gate was fitted on every fold's "
            "out-of-fold predictions; nothing is held out, so it is never the best run",
        }
        # every labeled series trained it: nothing was chosen on or held out
        split = {"protocol": None, "trained_on": [str(i) for i in data.train_ids], "chosen_on": [], "scored_on": []}
    metrics["best_validation"] = None
    test = test_scores(model, members.config, data)
    if test is not None:
        metrics["test"] = test
    lineage = Lineage(
        run_id=folder.name,
        kind="blend",
        experiment="blend",
        members=names,
        model=f"blend{len(names)}",
        regularizer="+".join([members.lineage.model, *peers]),
        **members.lineage.data_fields(),
    )
    out_of_fold = held_out.arrays() if held_out is not None else None
    folder.finish_blend(model, metrics, members.config.to_dict(), lineage, split, out_of_fold)
    score = metrics["selection"]["score"] if metrics["selection"] else None
    log.info(
        f"wrote {folder.path}: "
        + (f"selection score {score:.4f}" if score is not None else "a refit, nothing held out")
        + f"; {gate_summary(model)}"
    )
    if test is not None:
        log.info(test_summary(test))
    return folder.path


def refit_runs(config: Config, cv_ids: list[str]) -> list[str]:
    """Each CV's refit run on every labeled series, refused in one line where one has none."""
    refits = []
    for cv_id in cv_ids:
        refit = RunFolder(finished_run(config, cv_id)).lineage().refit
        if not refit:
            raise DataError(
                f"{cv_id}: no refit run to blend; make cv REFIT=1 with its settings trains one on every labeled "
                "series (for the folds' median best epoch count), then make blend REFIT=1 again"
            )
        refits.append(refit)
    return refits


def blend(config: Config, names: list[str], refit: bool = False) -> Path:
    """The cross-validated blend of `names` (module docstring): its fold blends, then its CV entry;
    `refit`: then the blend refit on every labeled series (each CV's refit run, the peers fitted on
    every labeled series, one gate on every fold's out-of-fold predictions), named in the entry."""
    cv_ids, peers = split_members(names)
    lineages = cut_alike(config, cv_ids)
    first_config = RunFolder.of(config, cv_ids[0]).config()
    members = [*cv_ids, *(f"{PEER}{peer}" for peer in peers)]
    cv_id = combined_cv_id(config, first_config, f"blend{len(members)}", [*members, BLEND_METHOD])
    folder = RunFolder.of(config, cv_id)
    if folder.finished and (folder.lineage().refit or not refit):
        log.info(f"{folder.path}: this cross-validated blend exists (its members are the same)")
        return folder.path
    refits = refit_runs(config, cv_ids) if refit else []
    # every fold's out-of-fold predictions first (each fold's gate is fitted on the others'): read
    # where its fold blend kept them, else predicted by its members
    folds = [list(fold_runs) for fold_runs in zip(*(lineage.folds for lineage in lineages))]
    fold_blends = [RunFolder.of(config, blend_run_id(config, fold_runs, peers)) for fold_runs in folds]
    progress = Progress(2 * len(folds) + refit)
    parts: dict[int, Members] = {}
    out_of_fold: list[OutOfFold] = []
    for index, (fold_runs, fold_blend) in enumerate(zip(folds, fold_blends)):
        saved = fold_blend.out_of_fold()
        if saved is not None:
            progress.step(f"blend of {' '.join(members)}: the out-of-fold predictions {fold_blend.name} kept")
            out_of_fold.append(OutOfFold.from_arrays(saved))
        else:
            progress.step(f"blend of {' '.join(members)}: the members of the fold of {fold_runs[0]}")
            parts[index], predictions = fold_members(config, fold_runs, peers)
            out_of_fold.append(predictions)
    for index, sources in enumerate(gate_sources([predictions.held_out for predictions in out_of_fold])):
        progress.step(f"blend of {' '.join(members)}: the fold of {folds[index][0]}")
        with fold_blends[index].writing():
            if fold_blends[index].finished:
                log.info(f"{fold_blends[index].path}: this fold blend exists (its members are the same)")
                continue
            if index in parts:
                part = parts[index]
            else:
                # its kept predictions were read above, but the fold blend was removed before this
                # lock (by hand, or by a blend beside this one): its members are loaded again
                part = fold_members(config, folds[index], peers)[0]
            write_blend(config, part, peers, [out_of_fold[j] for j in sources], out_of_fold[index])
    refit_run = None
    if refit:
        progress.step(f"blend of {' '.join(members)}: refit on every labeled series")
        refit_folder = RunFolder.of(config, blend_run_id(config, refits, peers))
        with refit_folder.writing():
            if refit_folder.finished:
                log.info(f"{refit_folder.path}: this refit blend exists (its members are the same)")
            else:
                write_blend(config, load_members(config, refits, peers, fold=False), peers, out_of_fold, None)
        refit_run = refit_folder.name
    regularizer = "+".join([*(lineage.model for lineage in lineages), *peers])
    fold_dirs = [fold_blend.path for fold_blend in fold_blends]
    return finish_combined_cv(
        config, cv_id, first_config, lineages, fold_dirs, "blend", members, regularizer, refit=refit_run
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.blend", __doc__)
    parser.add_argument("--run", default="", help="cv:<cv id> ... peer:<name>[+copies] ...")
    parser.add_argument(
        "--refit", action="store_true", help="then the blend refit on every labeled series (needs each CV's refit run)"
    )
    args = parser.parse_args(argv)
    return run_stage(lambda config: blend(config, args.run.split(), refit=args.refit), args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
