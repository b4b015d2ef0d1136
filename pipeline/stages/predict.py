"""Stage 4, `make predict [RUN="id1 id2 ..."]`: trained runs -> a validated Kaggle submission CSV.

Writes submissions/<competition>_<model>_<regularizer>_<time>.csv (`file,activity`, activity
numbered from 1, in the sample submission's order), the class probabilities beside it
(`.probabilities.csv`) and its lineage (`.json`: runs, competition, message). Several runs are an
ensemble: their probabilities are averaged. Without RUN, the best finished run of the competition
is used, chosen on its validation score (never on test data). A file that fails the checks against
`sample_submission.csv` is not written.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.competition import SUBMISSION_COLUMNS, Competition
from pipeline.data.datasets import check_run_data, open_competition
from pipeline.data.scoring import validate_submission
from pipeline.errors import DataError
from pipeline.files import atomic_files, sha256_file
from pipeline.log import log
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import finished_run, resolve_runs


def load_run(config: Config, run_id: str) -> tuple[Any, Lineage]:
    """A finished run's model and lineage, refused when it was trained on other prepared data than the folder holds now."""
    folder = RunFolder(finished_run(config, run_id))
    lineage = folder.lineage()
    if lineage.competition != config.data.competition:
        raise DataError(
            f"run {run_id} was trained on {lineage.competition!r}, not {config.data.competition!r} (set COMPETITION={lineage.competition})"
        )
    check_run_data(config, run_id, lineage.data_inputs)
    return folder.load_model(), lineage


def prediction_key(config: Config, run_ids: list[str], competition: Competition) -> str:
    """What a submission depends on: the runs' model files (in their order) and the test series."""
    digest = hashlib.sha256()
    for run_id in run_ids:
        digest.update(f"{run_id}:{sha256_file(RunFolder(finished_run(config, run_id)).model_file)}\n".encode())
    digest.update(np.ascontiguousarray(competition.test.series).tobytes())
    digest.update("\n".join(map(str, competition.test.ids)).encode())
    digest.update("\n".join(competition.sample_submission["file"].astype(str)).encode())
    return digest.hexdigest()[:16]


def existing_submission(config: Config, key: str) -> Path | None:
    """A submission written from the same inputs whose CSV is still the one written then, or None."""
    folder = config.path("submissions")
    for lineage_path in sorted(folder.glob(f"{config.data.competition}_*.json")):
        lineage = json.loads(lineage_path.read_text())
        path = folder / str(lineage.get("file", ""))
        if lineage.get("key") == key and path.is_file() and sha256_file(path) == lineage.get("sha256"):
            return path
    return None


def predict_probabilities(
    config: Config, run_ids: list[str], competition: Competition | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(submission, probabilities, lineage) for the competition's test series, averaged over the runs."""
    competition = competition or open_competition(config)
    total = None
    lineages = []
    for run_id in run_ids:
        model, lineage = load_run(config, run_id)
        if tuple(lineage.series_shape) != competition.series_shape:
            raise DataError(
                f"run {run_id} expects series of {lineage.series_shape}, the test series are {list(competition.series_shape)}"
            )
        if lineages and lineage.classes != lineages[0].classes:
            raise DataError(
                f"run {run_id} predicts classes {lineage.classes}, run {lineages[0].run_id} {lineages[0].classes}: they cannot be averaged"
            )
        probabilities = model.predict(competition.test.series, batch_size=1024, verbose=0)
        total = probabilities if total is None else total + probabilities
        lineages.append(lineage)
    assert total is not None
    mean = total / len(run_ids)
    classes = np.array(lineages[0].classes)
    by_id = pd.DataFrame(mean, index=competition.test.ids, columns=[f"p_{c}" for c in classes])
    order = competition.sample_submission["file"].astype(str)
    submission = pd.DataFrame({"file": order, "activity": classes[by_id.loc[order].to_numpy().argmax(1)]})
    probabilities = by_id.loc[order].reset_index(names="file")
    if len(run_ids) == 1:
        model_name, regularizer = lineages[0].model, lineages[0].regularizer
    else:
        model_name, regularizer = (
            f"ensemble{len(run_ids)}",
            "+".join(sorted({lineage.model for lineage in lineages})),
        )
    record = {
        "competition": config.data.competition,
        "runs": run_ids,
        "model": model_name,
        "regularizer": regularizer,
        "message": f"{model_name} {regularizer} ({', '.join(run_ids)})",
    }
    validate_submission(submission, competition.sample_submission, competition.activities, "prediction")
    return submission, probabilities, record


def write_submission(
    config: Config, submission: pd.DataFrame, probabilities: pd.DataFrame, lineage: dict[str, Any]
) -> Path:
    """Write the CSV, its probabilities and its lineage together: all three are complete in temp
    files before any is renamed into place, the CSV last (it is what submit and the up-to-date check
    look for), so a crash leaves either no submission or a whole one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{lineage['competition']}_{lineage['model']}_{lineage['regularizer']}_{stamp}"
    folder = config.path("submissions")
    text = submission.to_csv(index=False, columns=list(SUBMISSION_COLUMNS))
    record = {**lineage, "file": f"{name}.csv", "created": stamp, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    contents = {
        f"{name}.probabilities.csv": probabilities.to_csv(index=False, float_format="%.6f"),
        f"{name}.json": json.dumps(record, indent=2) + "\n",
        f"{name}.csv": text,
    }
    with atomic_files(*(folder / file for file in contents)) as temps:
        for temp, content in zip(temps, contents.values()):
            temp.write_text(content)
    return folder / f"{name}.csv"


def predict(config: Config, run_ids: list[str]) -> Path:
    run_ids = resolve_runs(config, run_ids)
    competition = open_competition(config)
    key = prediction_key(config, run_ids, competition)
    existing = existing_submission(config, key)
    if existing is not None:
        log.info(
            f"up to date: {existing} holds the prediction of {', '.join(run_ids)} on this test set (delete it to write a new one)"
        )
        return existing
    submission, probabilities, lineage = predict_probabilities(config, run_ids, competition)
    path = write_submission(config, submission, probabilities, {**lineage, "key": key})
    counts = submission["activity"].value_counts().sort_index().to_dict()
    log.info(f"wrote {path} ({len(submission)} rows, predicted activities {counts}) from {', '.join(run_ids)}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.predict", __doc__)
    parser.add_argument(
        "--run",
        default="",
        help="run ids separated by spaces; 'experiment' = the run of --exp/--set (default: the best run of the competition)",
    )
    args = parser.parse_args(argv)
    return run_stage(lambda config: predict(config, args.run.split()), args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
