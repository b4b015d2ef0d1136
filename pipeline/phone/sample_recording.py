"""`make sample-recording [SUBJECT=2] [FORMAT=sensorlogger|phyphox|csv]`: a held-out HAPT recording
written as a phone app exports it (100 Hz with timestamp jitter, m/s^2, gravity apart), with its
labels beside it, into data/samples/: something to try `make recording` on without a phone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.hapt import HAPT_FOLDER, hapt_experiment
from pipeline.log import log
from pipeline.phone.formats import FORMATS, app_like, write_format


def write_sample(
    raw_folder: Path, samples_folder: Path, user: int, fmt: str, test_subjects: tuple[int, ...], rate_hz: float = 50.0
) -> Path:
    """The user's first HAPT experiment as `fmt` at 100 Hz with jitter, plus `<name>_labels.csv` (time_s, label)."""
    name, values = hapt_experiment(raw_folder, user, test_subjects)
    times, acc_ms2, gyro = app_like(values[:, :3], values[:, 3:6], rate_hz, 100.0, 0.002, seed=user)
    samples_folder.mkdir(parents=True, exist_ok=True)
    target = samples_folder / f"hapt_{name}_{fmt}{'.zip' if fmt == 'sensorlogger' else '.csv' if fmt == 'csv' else ''}"
    options = write_format(target, fmt, times, acc_ms2, gyro)
    pd.DataFrame({"time_s": np.arange(len(values)) / rate_hz, "label": values[:, 6].astype(int)}).to_csv(
        samples_folder / f"hapt_{name}_labels.csv", index=False
    )
    if options is not None:
        log.info(
            f"read it with COLUMNS={','.join(options.columns)} UNITS={options.units} GYRO={options.gyro_units} SET=recording.time_unit={options.time_unit}"
        )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "pipeline.phone.sample_recording", "Write a held-out HAPT recording as a phone app exports it (data/samples/)."
    )
    parser.add_argument("--user", type=int, default=2, help="a test subject (default 2)")
    parser.add_argument("--format", default="sensorlogger", choices=FORMATS)
    args = parser.parse_args(argv)

    def write(config: Config) -> None:
        target = write_sample(
            config.raw_dir / HAPT_FOLDER,
            config.path("data", "samples"),
            args.user,
            args.format,
            config.data.test_subjects,
            config.data.sample_rate_hz,
        )
        log.info(f"wrote {target} (and its labels beside it): try make recording FILE={target}")

    return run_stage(write, args)


if __name__ == "__main__":
    sys.exit(main())
