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
- each peer fitted on fold i's training series (what the recurrent fold run trained on);
- the noise estimator fitted on those clean training series, and the gate fitted on fold i's
  chosen-on series (the inner fold the recurrent fold run chose its epoch on, which no member
  trained on), each seen once at every level of GATE_LEVELS.
It is then scored on fold i's held-out series, which chose nothing, by the one selection function
every fold run is scored by. So the blend is a CV entry like `make cv`'s: `make cv-compare
A=<blend id> B=<a member CV>` pairs it with its members fold by fold, and `make predict
RUN=cv:<blend id>` (and make evaluate, make recording) averages its fold blends. `make export`
refuses it (its peers are scikit-learn pipelines, its gate NumPy; `make ensemble` of recurrent
runs exports). Only CVs made under the nested protocol can be blended: under the old one the
chosen-on series were the scored ones.

Writes runs/<competition>_blend<m>_<hash>/ per fold (blend.pkl, config.json, run.json, split.json,
metrics.json with the gate's numbers) and runs/<competition>_cv<k>[x<r>]_blend<m>_<hash>/ (kind "cv").
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.datasets import PROTOCOL_NESTED, load_training_data, split_record
from pipeline.data.signals import NoiseLevelEstimator
from pipeline.errors import DataError
from pipeline.files import short_hash
from pipeline.log import log
from pipeline.progress import Progress
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import finished_run, run_config
from pipeline.runs.scoring import selection_score, test_scores, test_summary, validation_scores
from pipeline.stages.cv_compare import PEER
from pipeline.stages.ensemble import combined_cv_id, cut_alike, finish_combined_cv

REPORTED_LEVELS = (0.0, 0.5, 1.0)  # where the log shows each member's gate weight


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
    """Each member's weight at a few noise levels, e.g. `peer:minirocket 0.81 / 0.35 / 0.06`."""
    weights = model.gate.weights(np.array(REPORTED_LEVELS))
    levels = " / ".join(f"{level:g}" for level in REPORTED_LEVELS)
    members = ", ".join(
        f"{name} {' / '.join(f'{w:.2f}' for w in weights[:, index])}" for index, name in enumerate(model.names)
    )
    return f"gate weights at noise {levels}: {members}"


def fit_fold_blend(config: Config, fold_runs: list[str], peers: list[str]) -> Path:
    """Blend fold i: the CVs' fold runs `fold_runs` (of one and the same fold) and the peers fitted
    on its training series, gated on its chosen-on series, scored on its held-out series."""
    from pipeline.models import baselines
    from pipeline.models.blend import GATE_LEVELS, BlendModel, fit_gate, gate_training_set

    names = [*fold_runs, *(f"{PEER}{peer}" for peer in peers)]
    folder = RunFolder.of(config, f"{config.data.competition}_blend{len(names)}_{short_hash(names)}")
    fold = run_config(config, finished_run(config, fold_runs[0]))
    data = load_training_data(fold)
    if data.protocol != PROTOCOL_NESTED:
        raise DataError(
            f"{fold_runs[0]}: not a fold run of the nested protocol (its chosen-on series are the scored ones), "
            "so a gate fitted on them would be scored on what chose it; make cv again"
        )
    with folder.writing():
        if folder.finished:
            log.info(f"{folder.path}: this fold blend exists (its members are the same)")
            return folder.path
        members: list[Any] = [RunFolder(finished_run(config, run)).load_model() for run in fold_runs]
        peer_fits = {}
        for peer in peers:
            fit = baselines.fit_peer_spec(
                peer, fold, data.train_series, data.train_labels, data.train_std, len(data.classes)
            )
            log.info(
                f"    {PEER}{peer} fitted on {fit.series} series in {fit.seconds} s, peak memory {fit.peak_gib} GiB"
            )
            members.append(fit.model)
            peer_fits[peer] = {"seconds": fit.seconds, "peak_gib": fit.peak_gib, "series": fit.series}
        estimator = NoiseLevelEstimator.fit(data.train_series, data.train_std)
        series, labels, _ = gate_training_set(
            data.validation_series, data.validation_labels, fold.data.noise_profile, data.train_std, fold.train.seed
        )
        probabilities = [np.asarray(member.predict(series, batch_size=1024, verbose=0)) for member in members]
        gate = fit_gate(probabilities, labels, estimator.levels(series))
        model = BlendModel(members, names, gate, estimator, keras_members=list(range(len(fold_runs))))
        metrics: dict[str, Any] = {
            "members": names,
            "gate": {
                "intercepts": gate.intercepts.tolist(),
                "slopes": gate.slopes.tolist(),
                "fitted_on": f"{data.validation}: {len(data.validation_series)} chosen-on series at each level of {list(GATE_LEVELS)}",
            },
            "peers": peer_fits,
            "validation": validation_scores(model, fold, data),
            "selection": selection_score(model, fold, data),
            "best_validation": None,
            "note": "the gate was fitted on the fold's chosen-on series; the held-out fold it is scored on chose nothing",
        }
        test = test_scores(model, fold, data)
        if test is not None:
            metrics["test"] = test
        first = RunFolder(finished_run(config, fold_runs[0])).lineage()
        lineage = Lineage(
            run_id=folder.name,
            kind="blend",
            experiment="blend",
            members=names,
            model=f"blend{len(names)}",
            regularizer="+".join([first.model, *peers]),
            backend=first.backend,
            competition=first.competition,
            classes=first.classes,
            channels=first.channels,
            series_shape=first.series_shape,
            data_inputs=first.data_inputs,
        )
        folder.finish_blend(model, metrics, fold.to_dict(), lineage, split_record(data))
    log.info(f"wrote {folder.path}: selection score {metrics['selection']['score']:.4f}; {gate_summary(model)}")
    if test is not None:
        log.info(test_summary(test))
    return folder.path


def blend(config: Config, names: list[str]) -> Path:
    """The cross-validated blend of `names` (module docstring): its fold blends, then its CV entry."""
    cv_ids, peers = split_members(names)
    lineages = cut_alike(config, cv_ids)
    first_config = RunFolder.of(config, cv_ids[0]).config()
    members = [*cv_ids, *(f"{PEER}{peer}" for peer in peers)]
    cv_id = combined_cv_id(config, first_config, f"blend{len(members)}", members)
    folder = RunFolder.of(config, cv_id)
    if folder.finished:
        log.info(f"{folder.path}: this cross-validated blend exists (its members are the same)")
        return folder.path
    fold_dirs = []
    progress = Progress(len(lineages[0].folds))
    for fold_runs in zip(*(lineage.folds for lineage in lineages)):
        progress.step(f"blend of {' '.join(members)}: the fold of {fold_runs[0]}")
        fold_dirs.append(fit_fold_blend(config, list(fold_runs), peers))
    regularizer = "+".join([*(lineage.model for lineage in lineages), *peers])
    return finish_combined_cv(config, cv_id, first_config, lineages, fold_dirs, "blend", members, regularizer)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.blend", __doc__)
    parser.add_argument("--run", default="", help="cv:<cv id> ... peer:<name>[+copies] ...")
    args = parser.parse_args(argv)
    return run_stage(lambda config: blend(config, args.run.split()), args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
