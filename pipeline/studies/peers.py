"""`make peers`: what a user would run instead of a recurrent model, on the same splits and noise.

Logistic regression and random forest on per-series statistics, and MiniRocket, MultiRocket-Hydra
and QUANT (aeon; pipeline.models.baselines), each fitted
on the competition's training split as is and with `peers.noised_copies` copies of it noised like
the test (the course's recipe: `augment.noised_copies_level` x the training std, the competition's
noise profile). Every peer is scored exactly as a run's metrics are: validation accuracy at each of
`train.noise_levels` (mean over `train.noise_seeds` draws, the same draws), then, as a report, the
test subjects at each level and the competition's noisy test file. Beside them: the competition's
best recurrent run, chosen on its validation selection score (pipeline.runs.registry.best_run), with the
scores from its metrics.json. Peers are not tuned: these are their default settings. Each peer's
fit time and the process's peak memory during its fit (Linux's high-water mark) stand beside its
accuracy.

Writes reports/peers/<competition>/peers.csv and peers.md, and, where the organizer side is known,
confusion.json: each peer's confusion counts on the competition's test file (rows the truth, columns
the prediction), to set beside a run's (`make evaluate`'s evaluation.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.datasets import load_training_data, organizer_side, selection_definition
from pipeline.errors import ConfigError, DataError
from pipeline.files import atomic_files
from pipeline.log import log
from pipeline.progress import Progress
from pipeline.runs import tracking
from pipeline.runs.folder import RunFolder
from pipeline.runs.registry import best_run
from pipeline.runs.scoring import score_row


def recurrent_row(config: Config, selection: dict) -> dict[str, object] | None:
    """The best run's scores as a row, or None when the competition has no comparable run."""
    try:
        run_id = best_run(config, selection)
    except DataError:
        return None
    metrics = RunFolder.of(config, run_id).metrics()
    row: dict[str, object] = {
        "peer": f"recurrent: {run_id}",
        "noised copies": "",
        "fit seconds": metrics.get("train_seconds"),
        "fit peak GiB": round(metrics["peak_rss_mb"] / 1024, 2) if "peak_rss_mb" in metrics else None,
    }
    row.update({f"val@{level}": value["mean"] for level, value in metrics["validation"].items()})
    if "test" in metrics:
        row.update({f"test@{level}": value["mean"] for level, value in metrics["test"]["noise_levels"].items()})
        row["test file"] = metrics["test"].get("competition_file")
    return row


def check_peers(config: Config) -> None:
    """One line for a peer that is unknown or cannot be fitted here, before anything slow is imported."""
    from pipeline.models import baselines

    unknown = sorted(set(config.peers.models) - set(baselines.PEERS))
    if unknown:
        raise ConfigError(f"peers.models: unknown peer {unknown[0]!r} (known: {', '.join(baselines.PEERS)})")
    for name in config.peers.models:
        baselines.check_can_fit(name)


def peer_table(config: Config) -> tuple[pd.DataFrame, dict[str, object] | None]:
    """The peers' scores, one row per peer and training set; with the organizer side, their confusion
    counts on the test file."""
    from sklearn.metrics import confusion_matrix

    from pipeline.data.scoring import predicted_classes
    from pipeline.models import augment, baselines

    check_peers(config)
    data = load_training_data(config)
    host = organizer_side(config, data.competition, data.classes)
    rows = []
    confusion: dict[str, object] | None = (
        None if host is None else {"classes": list(data.classes), "file": "test", "peers": []}
    )
    progress = Progress(len(config.peers.models) * len({0, config.peers.noised_copies}))
    for copies in sorted({0, config.peers.noised_copies}):
        series, labels = augment.noised_copies(
            data.train_series,
            data.train_labels,
            copies,
            config.augment.noised_copies_level,
            config.data.noise_profile,
            data.train_std,
            config.train.seed,
        )
        for name in config.peers.models:
            progress.step(
                f"{name}, {copies} noised cop{'y' if copies == 1 else 'ies'}: fitting on {len(series)} series ..."
            )
            fit = baselines.fit_peer(name, config.train.seed, series, labels, len(data.classes))
            model = fit.model
            row: dict[str, object] = {
                "peer": name,
                "noised copies": copies,
                "fit seconds": fit.seconds,
                "fit peak GiB": fit.peak_gib,
            }
            log.info(f"    fitted in {fit.seconds} s, peak memory {fit.peak_gib} GiB")
            row.update(score_row(model, config, data))
            rows.append(row)
            if confusion is not None:
                predicted = predicted_classes(model, data.competition.test.series)
                counts = confusion_matrix(host.file_labels, predicted, labels=range(len(data.classes)))
                confusion["peers"].append({"peer": name, "noised copies": copies, "counts": counts.tolist()})
    recurrent = recurrent_row(config, selection_definition(config, data))
    if recurrent is not None:
        rows.append(recurrent)
    return pd.DataFrame(rows), confusion


def peers(config: Config) -> Path:
    from pipeline.runtime import import_keras

    check_peers(config)  # in a second, not after TensorFlow's start-up
    import_keras()  # quietly, before anything below imports it
    table, confusion = peer_table(config)
    folder = config.path("reports", "peers", config.data.competition)
    folder.mkdir(parents=True, exist_ok=True)
    header = (
        f"Peers on {config.data.competition}: fitted on the training split, scored on the same validation series and "
        f"noise draws as the runs; the test columns are reports, never choices.\n\n"
    )
    names = ["peers.csv", "peers.md", *(["confusion.json"] if confusion is not None else [])]
    with atomic_files(*(folder / name for name in names)) as (csv_path, markdown_path, *confusion_path):
        table.to_csv(csv_path, index=False, float_format="%.4f")
        markdown_path.write_text(header + table.to_markdown(index=False, floatfmt=".4f") + "\n")
        if confusion_path:
            confusion_path[0].write_text(json.dumps(confusion, indent=1) + "\n")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    log.info(f"wrote {', '.join(str(folder / name) for name in names)}")
    rows = [  # one MLflow run per peer and training set (the recurrent run is mirrored by make train)
        {
            **{key: value for key, value in row.items() if key not in ("peer", "noised copies")},
            "name": f"{row['peer']}, {row['noised copies']} noised copies",
            "params": {"peer": row["peer"], "noised_copies": row["noised copies"]},
        }
        for row in table.to_dict("records")
        if not str(row["peer"]).startswith("recurrent")
    ]
    tracking.mirror_table(config, "peer", rows, [folder / "peers.md"])
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.peers", __doc__)
    args = parser.parse_args(argv)
    return run_stage(peers, args)


if __name__ == "__main__":
    sys.exit(main())
