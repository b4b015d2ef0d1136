"""Stage 5, `make submit [FILE=...] [MESSAGE=...]` and `make leaderboard`.

For an emulated competition (one with an answer key in data/private/<competition>/) the local
leaderboard plays Kaggle's part: it validates the file, scores it against the answer key, shows
the public score (accuracy on the Public rows) and keeps the private score (the Private rows)
for `make leaderboard`, as Kaggle does after a competition closes. Every scored file is recorded
in submissions/leaderboard.csv with its SHA-256, so a file edited after scoring is flagged.
For a real Kaggle competition, the file is uploaded with the official `kaggle` client
(pipeline/kaggle_source.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.competition import DataError, load_competition, read_submission
from pipeline.config import Config, load_config
from pipeline.files import sha256_file, write_csv_atomic
from pipeline.predict import validate_submission

LEADERBOARD = "leaderboard.csv"
LEADERBOARD_COLUMNS = ["submitted", "competition", "file", "sha256", "message", "public_score", "private_score"]


def score(submission: pd.DataFrame, solution: pd.DataFrame) -> tuple[float, float]:
    """(public, private) accuracy of a validated submission against a `file,activity,Usage` answer key."""
    merged = solution.merge(submission.astype({"file": str}), on="file", suffixes=("_true", "_predicted"))
    correct = merged["activity_true"].astype(int) == merged["activity_predicted"].astype(int)
    public = merged["Usage"] == "Public"
    return float(correct[public].mean()), float(correct[~public].mean())


def latest_submission(config: Config) -> Path:
    files = sorted(config.path("submissions").glob(f"{config.data.competition}_*.csv"), key=lambda p: p.stat().st_mtime)
    files = [f for f in files if not f.name.endswith(".probabilities.csv")]
    if not files:
        raise DataError(f"{config.path('submissions')}: no submission for {config.data.competition!r}; run `make predict` first")
    return files[-1]


def read_leaderboard(config: Config) -> pd.DataFrame:
    path = config.path("submissions", LEADERBOARD)
    if not path.is_file():
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    return pd.read_csv(path, dtype={"sha256": str, "message": str})


def submit_local(config: Config, path: Path, message: str) -> tuple[dict[str, object], bool]:
    """Validate and score `path` on the local leaderboard: (its row, whether the row is new).
    A file already scored with the same content keeps its row: scoring it again adds nothing."""
    board = read_leaderboard(config)
    digest = sha256_file(path)
    same = board[(board["competition"] == config.data.competition) & (board["file"] == path.name) & (board["sha256"] == digest)] if len(board) else board
    if len(same):
        return same.iloc[0].to_dict(), False
    competition = load_competition(config.processed_dir / config.data.competition)
    submission = read_submission(path)
    validate_submission(submission, competition.sample_submission, competition.activities, str(path))
    solution = pd.read_csv(config.private_dir / config.data.competition / "solution.csv", dtype={"file": str})
    public, private = score(submission, solution)
    lineage_path = path.with_suffix(".json")
    if not message and lineage_path.is_file():
        message = json.loads(lineage_path.read_text()).get("message", "")
    row = {
        "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
        "competition": config.data.competition,
        "file": path.name,
        "sha256": digest,
        "message": message or path.stem,
        "public_score": round(public, 5),
        "private_score": round(private, 5),
    }
    board = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
    write_csv_atomic(config.path("submissions", LEADERBOARD), board, index=False)
    return row, True


def leaderboard(config: Config) -> pd.DataFrame:
    """Every scored submission of the competition, best public score first, with a file check."""
    board = read_leaderboard(config)
    board = board[board["competition"] == config.data.competition].copy()

    def state(row: pd.Series) -> str:
        path = config.path("submissions", row["file"])
        if not path.is_file():
            return "file missing"
        return "ok" if sha256_file(path) == row["sha256"] else "CHANGED since scored"

    board["file_check"] = board.apply(state, axis=1) if len(board) else []
    return board.sort_values(["public_score", "submitted"], ascending=[False, True], ignore_index=True)


def has_answer_key(config: Config) -> bool:
    return (config.private_dir / config.data.competition / "solution.csv").is_file()


def submit(config: Config, file: str, message: str) -> None:
    """Score on the local leaderboard when the competition has an answer key here, else upload to Kaggle."""
    path = Path(file) if file else latest_submission(config)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if has_answer_key(config):
        row, new = submit_local(config, path, message)
        already = "" if new else f"already scored on {row['submitted']}, no new row; "
        print(f"{path.name}: {already}public score {row['public_score']:.5f} (accuracy on the public part of the test set; `make leaderboard` shows the private score)")
    else:
        from pipeline import kaggle_source

        kaggle_source.submit(config, path, message)


def show_leaderboard(config: Config) -> None:
    board = leaderboard(config)
    print(board[["submitted", "file", "public_score", "private_score", "file_check", "message"]].to_markdown(index=False, floatfmt=".5f") if len(board) else "no scored submissions yet")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.submit", __doc__)
    parser.add_argument("--file", default="", help="submission CSV (default: the newest of the competition)")
    parser.add_argument("--message", default="", help="submission message (default: the file's lineage)")
    parser.add_argument("--leaderboard", action="store_true", help="show the local leaderboard instead of submitting")
    args = parser.parse_args(argv)
    if args.leaderboard:
        return run_stage(lambda: show_leaderboard(load_config(args.exp, args.set)))
    return run_stage(lambda: submit(load_config(args.exp, args.set), args.file, args.message))

if __name__ == "__main__":
    sys.exit(main())
