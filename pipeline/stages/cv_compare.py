"""`make cv-compare A=<cv id or experiment> B=<...> [SET=...]`: two cross-validated configurations
compared paired, fold by fold.

Subject difficulty moves every configuration together (on raw windows one fold of subjects scores
0.86-0.89 where the others score 0.95-0.97, whatever the model), so two means with their spreads
("0.935 ± 0.035 against 0.930 ± 0.051") hide whether one configuration wins on every fold. Trained
on the same folds, they are compared by the per-fold differences d_i = A_i - B_i of the selection
score (validation at the selection's noise level): their mean, and a 95% interval from the
corrected resampled t-test (Nadeau and Bengio 2003; Bouckaert and Frank 2004 for repeated k-fold):

    t = mean(d) / sqrt((1 / n + n_held_out / n_train) * var(d)),  n = folds x repeats,  df = n - 1

The correction n_held_out / n_train accounts for the training sets overlapping between folds,
which makes the plain paired t-test far too confident; it is computed from the series counts each
fold run recorded (scored_on / trained_on: 1 / (k - 1) only when nothing caps or holds back the
training series), the larger of the two sides'. The verdict is "A ahead" or "B ahead" only when the
interval excludes zero; otherwise "not separated" (keep the simpler configuration). Fewer than 5
paired differences, or differences with no spread at all, give no ranking ("too few pairs to
rank", "no spread to test"). `cv.repeats` reshuffles the subjects into new folds per repeat (without subjects, it moves the
block boundaries): more
repeats, a narrower interval. Both CVs must have been cut into the same folds (checked from each
fold's scored ids); the test set is never read.

A and B are a CV id (`make runs` lists them; a `cv:` prefix is allowed) or an experiment file
whose cross-validation `make cv EXP=...` ran with the same SET=. One of them may instead be a peer,
`peer:<name>` or `peer:<name>+copies` (`make peers`' estimators: logistic_regression, random_forest,
minirocket, multirocket_hydra, quant; `+copies` adds `peers.noised_copies` noised copies of each
fold's training series; each fold's fit time and peak memory are printed): it is
then fitted on every fold run's training part of the other side's CV (what the recurrent run
trained and chose on: a peer chooses nothing) and scored by the same function (training.selection_score)
on the same held-out series, noise draws and selection, so "is the recurrent model ahead of logistic
regression?" is a paired question too. Each fold's peer score is kept in
reports/cv_compare/peer_folds/<peer>/<key>.json, keyed by what it depends on (the fold's split:
the data, cv, train, augment and peers settings of its run's config; the peer code, the libraries'
versions), so pairing the same peer again, or with another CV cut into the same folds (another
model, a blend of that CV), reads it instead of refitting (MiniRocket + copy takes 12 minutes on
raw's six folds); delete the folder to refit.
Both sides' fold definitions (scored ids, noise, draws, seed, protocol) must agree fold by fold; a
CV made under the old protocol (folds that chose on the series they were scored on) is refused
beside a nested one, with the command that re-runs it. The comparison is written to
reports/cv_compare/<A>__<B>/comparison.{md,json}.

`LEVEL=<noise>` pairs the same fold runs on another reading: each fold run's validation accuracy on
its held-out fold at that noise (one of train.noise_levels, drawn as `make cv` drew it; a peer is
scored there too). The held-out fold chose nothing, so the reading is honest, and it asks what the
selection score cannot: is A more robust than B at 1.0, past the competition's noise? Both sides'
fold runs must have drawn their noise alike (train.seed, train.noise_seeds, data.noise_profile).
Written to reports/cv_compare/<A>__<B>__noise<level>/.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import Config, load_config
from pipeline.data.datasets import PROTOCOL_NESTED, TrainingData, fold_protocol, protocol_mismatch
from pipeline.errors import DataError
from pipeline.files import atomic_folder, sha256_file, short_hash, write_json_atomic
from pipeline.log import log
from pipeline.progress import Progress
from pipeline.runs.folder import RunFolder
from pipeline.runs.registry import cv_id_for, run_config

PEER = "peer:"  # how a peer is named beside CV ids (make blend names its peers the same way)
# The sections of a fold run's config that a peer fitted and scored on its fold reads (the data, the
# split, the noise draws and seed, the noised copies); not the recurrent model's (model,
# regularization) nor where files go (paths). cv.small_blend names what `make train` blends on a
# small competition, not the split.
PEER_READS = ("data", "cv", "train", "augment", "peers")
# What both sides' fold runs must have been scored with, fold by fold (the peer's are its own, not copied).
SAME_SELECTION = ("competition", "data", "select_on", "noise_profile", "noise_level", "draws", "seed", "protocol")


@dataclass(frozen=True)
class PairedComparison:
    differences: np.ndarray  # A - B per fold
    mean: float
    low: float  # the 95% interval of the mean difference
    high: float
    t: float
    p: float
    verdict: str  # "A ahead", "B ahead" or "not separated"

    def verdict_naming(self, a: str, b: str) -> str:
        """The verdict with A and B named: "<a> ahead", "<b> ahead" or "not separated"."""
        return {"A ahead": f"{a} ahead", "B ahead": f"{b} ahead"}.get(self.verdict, self.verdict)


MIN_PAIRS = 5  # fewer paired differences give a t interval too wide and too fragile to rank on
TOO_FEW = "too few pairs to rank"
NO_SPREAD = "no spread to test"


def paired_comparison(
    a: np.ndarray, b: np.ndarray, held_out_per_train: float, confidence: float = 0.95
) -> PairedComparison:
    """The corrected resampled t-test of the per-fold differences a - b (same folds, same order).
    `held_out_per_train`: scored over training series per fold, as the folds really used them.
    Fewer than MIN_PAIRS differences, or differences with no spread at all (the test has nothing to
    weigh the mean against), give no ranking: the verdict then says which, with t, p and the interval NaN."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 per-fold scores, got {a.shape} and {b.shape}")
    differences = a - b
    n = len(differences)
    mean = float(differences.mean())
    if np.ptp(differences) < 1e-9:  # equal up to float rounding (0.90 - 0.89 is not 0.95 - 0.94 in binary)
        return PairedComparison(differences, mean, np.nan, np.nan, np.nan, np.nan, NO_SPREAD)
    scale = float(np.sqrt((1 / n + held_out_per_train) * differences.var(ddof=1)))
    t = mean / scale
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * scale
    low, high = mean - half, mean + half
    p = float(2 * stats.t.sf(abs(t), df=n - 1))
    verdict = "A ahead" if low > 0 else "B ahead" if high < 0 else "not separated"
    if n < MIN_PAIRS:
        verdict = TOO_FEW
    return PairedComparison(differences, mean, low, high, float(t), p, verdict)


def held_out_ratio(series: list[dict[str, int] | None], folds: int) -> float:
    """Scored over training series, averaged over fold runs, from the counts each fold recorded;
    1 / (k - 1) for fold runs made before the counts were recorded (which trained on every series of
    the other folds, unless train.max_train_series capped them)."""
    if any(counts is None for counts in series):
        return 1 / (folds - 1)
    return float(np.mean([counts["scored_on"] / counts["trained_on"] for counts in series]))


def resolve_cv(config: Config, name: str, given: list[str]) -> str:
    """A CV id from what the user gave: an id in runs/ (optionally `cv:`-prefixed), or an experiment file
    (its CV with the overrides `given` on the command line)."""
    name = name.removeprefix("cv:")
    lineage = RunFolder.of(config, name).lineage_or_none()
    if lineage is not None:
        if lineage.kind != "cv":
            raise DataError(
                f"{config.path('runs', name)}: a single run, not a cross-validation; `make runs` lists the CV ids (*_cv<k>_*)"
            )
        return name
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise DataError(f"{name}: experiment file not found")
        cv_id = cv_id_for(load_config(path, given))
        if not RunFolder.of(config, cv_id).finished:
            raise DataError(
                f"{config.path('runs', cv_id)}: not cross-validated yet; run `make cv EXP={name}` with the same SET= first"
            )
        return cv_id
    raise DataError(
        f"{config.path('runs', name)}: no such cross-validation; give a CV id from `make runs` or an experiments/*.toml file"
    )


@dataclass(frozen=True)
class FoldScores:
    """One side of a paired comparison, in fold-run order."""

    scores: list[float]  # the selection score of every fold run
    definitions: list[dict[str, Any]]  # what each was scored on (scored ids, noise, draws, protocol)
    definition: dict[str, Any]  # the cross-validation's selection definition
    held_out_per_train: float  # scored over training series, as the folds used them
    # what drew each fold run's validation noise (its train.seed, train.noise_seeds, data.noise_profile),
    # read only for a comparison at a LEVEL: two sides paired there must share them
    draws: list[dict[str, Any]]


def validation_draws(fold_config: dict[str, Any]) -> dict[str, Any]:
    """What drew a fold run's validation noise (runs.scoring.validation_scores), from its config.json."""
    train, data = fold_config.get("train", {}), fold_config.get("data", {})
    return {"seed": train.get("seed"), "noise_seeds": train.get("noise_seeds"), "profile": data.get("noise_profile")}


def validation_at(path: Path, validation: dict[str, Any], level: float) -> float:
    """A fold run's validation accuracy on its held-out series at noise `level` (mean over draws)."""
    if f"{level:g}" not in validation:
        raise DataError(
            f"{path}: no validation score at noise {level:g} (it has {', '.join(validation) or 'none'}); "
            "LEVEL= must be one of the levels in train.noise_levels, or leave it out to pair on the selection score"
        )
    return float(validation[f"{level:g}"]["mean"])


def fold_scores(config: Config, cv_id: str, level: float | None = None) -> FoldScores:
    """The fold scores of a finished cross-validation, as its fold runs recorded them: the selection
    score, or (`level`) the validation accuracy on the held-out fold at that noise."""
    folder = RunFolder.of(config, cv_id)
    if not folder.finished:
        raise DataError(
            f"{folder.path}: not a finished cross-validation (no {folder.metrics_file.name}); run `make cv` first"
        )
    runs = [RunFolder.of(config, run_id) for run_id in folder.lineage().folds]
    metrics = [run.metrics() for run in runs]
    selections = [run_metrics["selection"] for run_metrics in metrics]
    scores = (
        [selection["score"] for selection in selections]
        if level is None
        else [
            validation_at(run.metrics_file, run_metrics.get("validation") or {}, level)
            for run, run_metrics in zip(runs, metrics)
        ]
    )
    folds = int(folder.config()["cv"]["folds"])
    return FoldScores(
        scores,
        [selection["definition"] for selection in selections],
        folder.metrics()["selection"]["definition"],
        held_out_ratio([selection.get("series") for selection in selections], folds),
        [validation_draws(run.config()) for run in runs] if level is not None else [],
    )


def peer_training_part(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """What a peer is fitted on in a fold run's split: the series the recurrent run trained on and
    chose on (a peer chooses nothing, so nothing of the part is held back from it). Under the old
    protocol the chosen series are the scored ones, and a refit's are among its training series:
    then the training series alone."""
    if data.protocol != PROTOCOL_NESTED:
        return data.train_series, data.train_labels
    return (
        np.concatenate([data.train_series, data.validation_series]),
        np.concatenate([data.train_labels, data.validation_labels]),
    )


def peer_fold_key(peer: str, fold_config: dict[str, Any]) -> str:
    """What a peer's score on a fold run depends on: the peer, what it reads of the fold run's
    config (PEER_READS: every CV cut into the same folds under the same training settings shares it,
    whatever its model; a blend's fold runs carry their first member's), the peer code's source and
    the libraries that fit it."""
    from importlib.metadata import PackageNotFoundError, version

    from pipeline.models import augment, baselines, rocket

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    code = [sha256_file(Path(module.__file__)) for module in (augment, baselines, rocket)]
    libraries = {package: installed(package) for package in ("numpy", "scikit-learn", "aeon", "torch")}
    split = {section: fold_config.get(section) for section in PEER_READS}
    split["cv"] = {key: value for key, value in (split["cv"] or {}).items() if key != "small_blend"}
    return short_hash([peer, split, code, libraries], length=16)


def peer_fold_record(
    config: Config, peer: str, run_id: str, fold_config: dict[str, Any], validation: bool
) -> tuple[dict[str, Any], Path]:
    """A peer on one fold run (whose config.json holds `fold_config`): fitted on the fold's training
    part and scored as the run was (its selection; `validation`: also its accuracy at each of
    train.noise_levels), or read back from reports/cv_compare/peer_folds/ where the same fit was
    scored before, for this fold run or another cut the same way (`peer_fold_key`: a peer on raw
    windows takes minutes a fold; its scores cannot change while nothing it depends on does).
    Returned with the file that keeps it."""
    from pipeline.data.datasets import load_training_data
    from pipeline.models import baselines
    from pipeline.runs.scoring import selection_score, validation_scores

    fold_dir = config.path("runs", run_id)
    key = peer_fold_key(peer, fold_config)
    kept = config.path("reports", "cv_compare", "peer_folds", peer, f"{key}.json")
    if kept.is_file():
        record = json.loads(kept.read_text())
        if record.get("key") == key and (record.get("validation") or not validation):
            log.info(
                f"    {PEER}{peer} on {run_id}: its score kept in {kept} (fitted on this split for "
                f"{record.get('run')}; nothing it depends on changed)"
            )
            return record, kept
    fold = run_config(config, fold_dir)
    data = load_training_data(fold)
    part, part_labels = peer_training_part(data)
    fit = baselines.fit_peer_spec(peer, fold, part, part_labels, data.train_std, len(data.classes))
    log.info(f"    fitted on {fit.series} series in {fit.seconds} s, peak memory {fit.peak_gib} GiB")
    record = {
        "key": key,
        "peer": peer,
        "run": run_id,
        "fit": {"seconds": fit.seconds, "peak_gib": fit.peak_gib, "series": fit.series},
        "selection": selection_score(fit.model, fold, data, fitted_on=len(part)),
        "validation": validation_scores(fit.model, fold, data) if validation else None,
    }
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(kept, record)
    return record, kept


def peer_fold_scores(config: Config, peer: str, cv_id: str, level: float | None = None) -> FoldScores:
    """`fold_scores` of a peer (`<name>` or `<name>+copies`) cross-validated on the folds of `cv_id`.
    Each fold run's data are loaded from its own config, so the peer meets the same split: it is
    fitted on the fold's training part (the series the recurrent run trained on and chose on: a peer
    chooses nothing, so nothing of the part is held back from it) and scored by the same function,
    on the same scored series and noise draws, as the fold run (`peer_fold_record`); `level`: its
    validation accuracy at that noise instead of the selection score."""
    from pipeline.data.datasets import cv_definition
    from pipeline.models import baselines

    baselines.peer_spec(peer)  # an unknown peer is refused before any fold loads
    scores, definitions, counts, draws = [], [], [], []
    cv_folder = RunFolder.of(config, cv_id)
    progress = Progress(len(cv_folder.lineage().folds))
    for run_id in cv_folder.lineage().folds:
        progress.step(f"{PEER}{peer} on the folds of {cv_id}: {run_id}")
        fold_config = RunFolder.of(config, run_id).config()
        record, kept = peer_fold_record(config, peer, run_id, fold_config, validation=level is not None)
        selection = record["selection"]
        scores.append(selection["score"] if level is None else validation_at(kept, record["validation"], level))
        definitions.append(selection["definition"])
        counts.append(selection["series"])
        if level is not None:
            draws.append(validation_draws(fold_config))
    folds = int(cv_folder.config()["cv"]["folds"])
    return FoldScores(scores, definitions, cv_definition(definitions), held_out_ratio(counts, folds), draws)


def selection_keys(definition: dict[str, Any]) -> dict[str, Any]:
    """What two paired fold runs must share of their selection definitions (the protocol as recorded, or the old one)."""
    return {**{key: definition.get(key) for key in SAME_SELECTION}, "protocol": fold_protocol(definition)}


def compare(
    config: Config, a_name: str, b_name: str, given: list[str] = (), level: float | None = None
) -> PairedComparison:
    """The paired comparison of two finished cross-validations, or of a peer cross-validated on the
    folds of the other, on the selection score or (`level`) the held-out folds' validation accuracy
    at that noise; also written to reports/cv_compare/."""
    peers = [name.startswith(PEER) for name in (a_name, b_name)]
    if all(peers):
        raise DataError(
            f"{a_name} and {b_name}: two peers; one side must be a cross-validation whose folds the peer uses"
        )
    ids = [name if peer else resolve_cv(config, name, list(given)) for name, peer in zip((a_name, b_name), peers)]
    cv_id = ids[peers.index(False)]
    a_id, b_id = ids
    a, b = (
        peer_fold_scores(config, name.removeprefix(PEER), cv_id, level) if peer else fold_scores(config, name, level)
        for name, peer in zip(ids, peers)
    )
    if fold_protocol(a.definition) != fold_protocol(b.definition):
        raise DataError(protocol_mismatch(a_id, b_id, a.definition, b.definition))
    if [d["validation_ids"] for d in a.definitions] != [d["validation_ids"] for d in b.definitions]:
        raise DataError(
            f"{a_id} and {b_id} were not cut into the same folds ({len(a.scores)} and {len(b.scores)} fold runs, "
            "or other scored subjects): cross-validate both with the same cv.folds, cv.repeats and data"
        )
    if [selection_keys(d) for d in a.definitions] != [selection_keys(d) for d in b.definitions]:
        raise DataError(
            f"{a_id} and {b_id} were scored on different selections (noise level, profile, draws, seed, select_on or data); "
            "they are not comparable"
        )
    if level is not None and a.draws != b.draws:
        raise DataError(
            f"{a_id} and {b_id}: their fold runs drew their validation noise differently (train.seed, "
            "train.noise_seeds or data.noise_profile), so their scores at one level are not paired; "
            "pair them on the selection score (no LEVEL=)"
        )
    ratio = max(a.held_out_per_train, b.held_out_per_train)  # the larger correction of the two: the wider interval
    result = paired_comparison(np.array(a.scores), np.array(b.scores), ratio)
    write_report(config, a_id, b_id, a.scores, b.scores, a.definition, result, ratio, level)
    return result


VERDICT_NOTES = {
    "not separated": ": the interval holds zero; keep the simpler configuration.",
    TOO_FEW: f": fewer than {MIN_PAIRS} paired differences; cross-validate with more folds or cv.repeats before ranking.",
    NO_SPREAD: ": every fold differs by exactly the same amount, so the test has no spread to weigh it; no ranking.",
}


def report_lines(
    a_id: str,
    b_id: str,
    a: list[float],
    b: list[float],
    definition: dict[str, Any],
    result: PairedComparison,
    ratio: float,
    level: float | None = None,
) -> list[str]:
    protocol = fold_protocol(definition)
    scored = (
        f"accuracy on the fold's scored series at noise {definition['noise_level']:g} ({definition['select_on']} selection)"
        if level is None
        else f"validation accuracy on the fold's held-out series at noise {level:g} (each fold run's own noise draws; "
        f"a reading beside the selection score, which is at noise {definition['noise_level']:g})"
    )
    tested = (
        f"95% interval [{result.low:+.4f}, {result.high:+.4f}] (corrected resampled t-test, t = {result.t:.2f}, "
        f"p = {result.p:.3f}, {len(a) - 1} degrees of freedom, scored/training series {ratio:.3f})"
        if np.isfinite(result.t)
        else "no test"
    )
    lines = [
        f"# Paired comparison: A = {a_id}, B = {b_id}",
        "",
        f"Score per fold: {scored}, {len(a)} fold runs on the same folds, protocol {protocol}. Differences are A - B.",
        "",
        "| fold run | A | B | A - B |",
        "|--:|--:|--:|--:|",
        *(f"| {index + 1} | {x:.4f} | {y:.4f} | {x - y:+.4f} |" for index, (x, y) in enumerate(zip(a, b))),
        "",
        f"Unpaired: A {np.mean(a):.4f} ± {np.std(a):.4f}, B {np.mean(b):.4f} ± {np.std(b):.4f} (mean ± std over folds).",
        f"Paired: mean difference {result.mean:+.4f}, {tested}.",
        "",
        f"**{result.verdict}**" + VERDICT_NOTES.get(result.verdict, ""),
    ]
    return lines


def write_report(
    config: Config,
    a_id: str,
    b_id: str,
    a: list[float],
    b: list[float],
    definition: dict[str, Any],
    result: PairedComparison,
    ratio: float,
    level: float | None = None,
) -> None:
    name = f"{a_id}__{b_id}" + (f"__noise{level:g}" if level is not None else "")
    target = config.path("reports", "cv_compare", name.replace(":", "-"))  # peer:<name> -> peer-<name>
    lines = report_lines(a_id, b_id, a, b, definition, result, ratio, level)

    def number(value: float) -> float | None:  # JSON has no NaN
        return float(value) if np.isfinite(value) else None

    with atomic_folder(target) as temp:
        (temp / "comparison.md").write_text("\n".join(lines) + "\n")
        record = {
            "a": a_id, "b": b_id, "a_scores": a, "b_scores": b, "differences": result.differences.tolist(),
            "mean": result.mean, "low": number(result.low), "high": number(result.high), "t": number(result.t),
            "p": number(result.p), "verdict": result.verdict, "held_out_per_train": ratio, "protocol": fold_protocol(definition),
            "definition": definition, "level": level,
        }  # fmt: skip
        (temp / "comparison.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines[4:]))
    log.info(f"wrote {target}/comparison.md")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.cv_compare", __doc__)
    parser.add_argument("--a", required=True, help="a CV id or an experiment file (A=)")
    parser.add_argument("--b", required=True, help="a CV id or an experiment file (B=)")
    parser.add_argument(
        "--level", type=float, help="pair on the held-out folds' validation accuracy at this noise (LEVEL=)"
    )
    args = parser.parse_args(argv)

    return run_stage(lambda config: compare(config, args.a, args.b, overrides(args), args.level), args)


if __name__ == "__main__":
    sys.exit(main())
