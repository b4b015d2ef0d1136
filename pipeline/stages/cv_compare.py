"""`make cv-compare A=<cv id or experiment> B=<...> [SET=...]`: two cross-validated configurations
compared paired, fold by fold.

Subject difficulty moves every configuration together (on raw windows one fold of subjects scores
0.86-0.89 where the others score 0.95-0.97, whatever the model), so two means with their spreads
("0.935 ± 0.035 against 0.930 ± 0.051") hide whether one configuration wins on every fold. Trained
on the same folds, they are compared by the per-fold differences d_i = A_i - B_i of the selection
score (validation at the selection's noise level): their mean, and a 95% interval from the
corrected resampled t-test (Nadeau and Bengio 2003; Bouckaert and Frank 2004 for repeated k-fold):

    t = mean(d) / sqrt((1 / n + n_held_out / n_train) * var(d)),  n = folds x repeats,  df = n - 1

The correction n_held_out / n_train (1 / (k - 1) for k folds) accounts for the training sets
overlapping between folds, which makes the plain paired t-test far too confident. The verdict is
"A ahead" or "B ahead" only when the interval excludes zero; otherwise "not separated" (keep the
simpler configuration). `cv.repeats` reshuffles the subjects into new folds per repeat (without subjects, it moves the
block boundaries): more
repeats, a narrower interval. Both CVs must have been cut into the same folds (checked from each
fold's validation ids); the test set is never read.

A and B are a CV id (`make runs` lists them; a `cv:` prefix is allowed) or an experiment file
whose cross-validation `make cv EXP=...` ran with the same SET=. One of them may instead be a peer,
`peer:<name>` or `peer:<name>+copies` (`make peers`' estimators: logistic_regression, random_forest,
minirocket; `+copies` adds `peers.noised_copies` noised copies of each fold's training series): it is
then fitted on every fold run's training series of the other side's CV and scored on the same
validation series, noise draws and selection, so "is the recurrent model ahead of logistic
regression?" is a paired question too. The comparison is written to
reports/cv_compare/<A>__<B>/comparison.{md,json}.
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
from pipeline.errors import DataError
from pipeline.files import atomic_folder
from pipeline.stages.runs import LINEAGE, METRICS, cv_id_for, run_config

PEER = "peer:"


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


def paired_comparison(
    a: np.ndarray, b: np.ndarray, held_out_per_train: float, confidence: float = 0.95
) -> PairedComparison:
    """The corrected resampled t-test of the per-fold differences a - b (same folds, same order).
    `held_out_per_train`: held-out over training series per fold, 1 / (k - 1) for k-fold CV."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 per-fold scores, got {a.shape} and {b.shape}")
    differences = a - b
    n = len(differences)
    mean = float(differences.mean())
    scale = float(np.sqrt((1 / n + held_out_per_train) * differences.var(ddof=1)))
    if scale == 0:  # every fold differs by exactly the same amount
        t = np.inf if mean else 0.0
        low = high = mean
        p = 0.0 if mean else 1.0
    else:
        t = mean / scale
        half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * scale
        low, high = mean - half, mean + half
        p = float(2 * stats.t.sf(abs(t), df=n - 1))
    verdict = "A ahead" if low > 0 else "B ahead" if high < 0 else "not separated"
    return PairedComparison(differences, mean, low, high, float(t), p, verdict)


def resolve_cv(config: Config, name: str, given: list[str]) -> str:
    """A CV id from what the user gave: an id in runs/ (optionally `cv:`-prefixed), or an experiment file
    (its CV with the overrides `given` on the command line)."""
    name = name.removeprefix("cv:")
    lineage = config.path("runs", name, LINEAGE)
    if lineage.is_file():
        if json.loads(lineage.read_text()).get("kind") != "cv":
            raise DataError(
                f"{lineage.parent}: a single run, not a cross-validation; `make runs` lists the CV ids (*_cv<k>_*)"
            )
        return name
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise DataError(f"{name}: experiment file not found")
        cv_id = cv_id_for(load_config(path, given))
        if not config.path("runs", cv_id, METRICS).is_file():
            raise DataError(
                f"{config.path('runs', cv_id)}: not cross-validated yet; run `make cv EXP={name}` with the same SET= first"
            )
        return cv_id
    raise DataError(
        f"{config.path('runs', name)}: no such cross-validation; give a CV id from `make runs` or an experiments/*.toml file"
    )


def fold_scores(config: Config, cv_id: str) -> tuple[list[float], list[str], dict[str, Any], float]:
    """(selection score per fold run, validation-ids hash per fold run, the selection definition,
    held-out per training series: 1 / (k - 1)) of a finished cross-validation, in fold-run order."""
    folder = config.path("runs", cv_id)
    if not (folder / METRICS).is_file():
        raise DataError(f"{folder}: not a finished cross-validation (no {METRICS}); run `make cv` first")
    lineage = json.loads((folder / LINEAGE).read_text())
    scores, ids = [], []
    for run_id in lineage["folds"]:
        metrics = json.loads(config.path("runs", run_id, METRICS).read_text())
        scores.append(metrics["selection"]["score"])
        ids.append(metrics["selection"]["definition"]["validation_ids"])
    definition = json.loads((folder / METRICS).read_text())["selection"]["definition"]
    folds = int(json.loads((folder / "config.json").read_text())["cv"]["folds"])
    return scores, ids, definition, 1 / (folds - 1)


def peer_fold_scores(config: Config, peer: str, cv_id: str) -> tuple[list[float], list[str], dict[str, Any], float]:
    """`fold_scores` of a peer (`<name>` or `<name>+copies`) cross-validated on the folds of `cv_id`:
    fitted on each fold run's training series and scored like that run's selection score."""
    from pipeline.data.datasets import load_training_data
    from pipeline.models import augment, baselines
    from pipeline.stages.training import selection_score

    name, _, extra = peer.partition("+")
    if name not in baselines.PEERS or extra not in ("", "copies"):
        raise DataError(
            f"{PEER}{peer}: unknown peer (known: {', '.join(baselines.PEERS)}; add +copies for the noised copies)"
        )
    scores, ids = [], []
    for run_id in json.loads(config.path("runs", cv_id, LINEAGE).read_text())["folds"]:
        fold = run_config(config, config.path("runs", run_id))
        data = load_training_data(fold)
        copies = fold.peers.noised_copies if extra else 0
        series, labels = augment.noised_copies(
            data.train_series,
            data.train_labels,
            copies,
            fold.augment.noised_copies_level,
            fold.data.noise_profile,
            data.train_std,
            fold.train.seed,
        )
        print(f"  {peer} on the folds of {cv_id}: {run_id}, {len(series)} training series", flush=True)
        model = baselines.ProbabilityModel(
            baselines.make_peer(name, fold.train.seed).fit(series, labels), len(data.classes)
        )
        selection = selection_score(model, fold, data)
        scores.append(selection["score"])
        ids.append(selection["definition"]["validation_ids"])
    _, _, definition, ratio = fold_scores(config, cv_id)
    return scores, ids, definition, ratio


def compare(config: Config, a_name: str, b_name: str, given: list[str] = ()) -> PairedComparison:
    """The paired comparison of two finished cross-validations, or of a peer cross-validated on the
    folds of the other; also written to reports/cv_compare/."""
    peers = [name.startswith(PEER) for name in (a_name, b_name)]
    if all(peers):
        raise DataError(
            f"{a_name} and {b_name}: two peers; one side must be a cross-validation whose folds the peer uses"
        )
    ids = [name if peer else resolve_cv(config, name, list(given)) for name, peer in zip((a_name, b_name), peers)]
    cv_id = ids[peers.index(False)]
    a_id, b_id = ids
    (a_scores, a_folds, a_definition, ratio), (b_scores, b_folds, b_definition, _) = (
        peer_fold_scores(config, name.removeprefix(PEER), cv_id) if peer else fold_scores(config, name)
        for name, peer in zip(ids, peers)
    )
    if a_folds != b_folds:
        raise DataError(
            f"{a_id} and {b_id} were not cut into the same folds ({len(a_folds)} and {len(b_folds)} fold runs, "
            "or other validation subjects): cross-validate both with the same cv.folds, cv.repeats and data"
        )
    same = {key: a_definition[key] for key in ("noise_level", "select_on", "draws")} == {
        key: b_definition[key] for key in ("noise_level", "select_on", "draws")
    }
    if not same:
        raise DataError(
            f"{a_id} and {b_id} were scored on different selections (noise level, select_on or draws); they are not comparable"
        )
    result = paired_comparison(np.array(a_scores), np.array(b_scores), ratio)
    write_report(config, a_id, b_id, a_scores, b_scores, a_definition, result)
    return result


def report_lines(
    a_id: str, b_id: str, a: list[float], b: list[float], definition: dict[str, Any], result: PairedComparison
) -> list[str]:
    level = definition["noise_level"]
    lines = [
        f"# Paired comparison: A = {a_id}, B = {b_id}",
        "",
        f"Selection score per fold: validation accuracy at noise {level:g} ({definition['select_on']} selection), "
        f"{len(a)} fold runs on the same folds. Differences are A - B.",
        "",
        "| fold run | A | B | A - B |",
        "|--:|--:|--:|--:|",
        *(f"| {index + 1} | {x:.4f} | {y:.4f} | {x - y:+.4f} |" for index, (x, y) in enumerate(zip(a, b))),
        "",
        f"Unpaired: A {np.mean(a):.4f} ± {np.std(a):.4f}, B {np.mean(b):.4f} ± {np.std(b):.4f} (mean ± std over folds).",
        f"Paired: mean difference {result.mean:+.4f}, 95% interval [{result.low:+.4f}, {result.high:+.4f}] "
        f"(corrected resampled t-test, t = {result.t:.2f}, p = {result.p:.3f}, {len(a) - 1} degrees of freedom).",
        "",
        f"**{result.verdict}**"
        + ("" if result.verdict != "not separated" else ": the interval holds zero; keep the simpler configuration."),
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
) -> None:
    target = config.path("reports", "cv_compare", f"{a_id}__{b_id}".replace(":", "-"))  # peer:<name> -> peer-<name>
    lines = report_lines(a_id, b_id, a, b, definition, result)
    with atomic_folder(target) as temp:
        (temp / "comparison.md").write_text("\n".join(lines) + "\n")
        record = {
            "a": a_id, "b": b_id, "a_scores": a, "b_scores": b, "differences": result.differences.tolist(),
            "mean": result.mean, "low": result.low, "high": result.high, "t": result.t, "p": result.p, "verdict": result.verdict,
            "definition": definition,
        }  # fmt: skip
        (temp / "comparison.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines[4:]))
    print(f"wrote {target}/comparison.md")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.cv_compare", __doc__)
    parser.add_argument("--a", required=True, help="a CV id or an experiment file (A=)")
    parser.add_argument("--b", required=True, help="a CV id or an experiment file (B=)")
    args = parser.parse_args(argv)

    return run_stage(lambda: compare(load_config(args.exp, overrides(args)), args.a, args.b, overrides(args)))


if __name__ == "__main__":
    sys.exit(main())
