"""Stage 5, `make submit [FILE=...] [MESSAGE=...]` and `make leaderboard`.

For an emulated competition (one with an answer key in data/private/<competition>/) the local
leaderboard plays Kaggle's part: it validates the file, scores it against the answer key, shows
the public score (accuracy on the Public rows) and keeps the private score (the Private rows)
for `make leaderboard`, as Kaggle does after a competition closes. Every scored file is recorded
in submissions/leaderboard.csv with its SHA-256, so a file edited after scoring is flagged.
For a real Kaggle competition, the file is uploaded with the official `kaggle` client
(pipeline/data/kaggle_client.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
from filelock import FileLock

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.competition import read_submission
from pipeline.data.datasets import SOLUTION, open_competition
from pipeline.data.scoring import score, submission_message, validate_submission
from pipeline.errors import DataError
from pipeline.files import sha256_file, write_csv_atomic

LEADERBOARD = "leaderboard.csv"
LEADERBOARD_COLUMNS = ["submitted", "competition", "file", "sha256", "message", "public_score", "private_score"]


def latest_submission(config: Config) -> Path:
    files = sorted(config.path("submissions").glob(f"{config.data.competition}_*.csv"), key=lambda p: p.stat().st_mtime)
    files = [f for f in files if not f.name.endswith(".probabilities.csv")]
    if not files:
        raise DataError(
            f"{config.path('submissions')}: no submission for {config.data.competition!r}; run `make predict` first"
        )
    return files[-1]


def read_leaderboard(config: Config) -> pd.DataFrame:
    path = config.path("submissions", LEADERBOARD)
    if not path.is_file():
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    return pd.read_csv(path, dtype={"sha256": str, "message": str})


def already_scored(board: pd.DataFrame, config: Config, path: Path, digest: str) -> dict[str, object] | None:
    same = (
        board[
            (board["competition"] == config.data.competition)
            & (board["file"] == path.name)
            & (board["sha256"] == digest)
        ]
        if len(board)
        else board
    )
    return same.iloc[0].to_dict() if len(same) else None


def leaderboard_lock(config: Config) -> FileLock:
    """Serializes every read-modify-write of the leaderboard file (two `make submit` at once keep both rows)."""
    path = config.path("submissions", f".{LEADERBOARD}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, timeout=120)


def submit_local(config: Config, path: Path, message: str) -> tuple[dict[str, object], bool]:
    """Validate and score `path` on the local leaderboard: (its row, whether the row is new).
    A file already scored with the same content keeps its row: scoring it again adds nothing."""
    digest = sha256_file(path)
    scored = already_scored(read_leaderboard(config), config, path, digest)
    if scored is not None:
        return scored, False
    competition = open_competition(config)
    submission = read_submission(path)
    validate_submission(submission, competition.sample_submission, competition.activities, str(path))
    solution = pd.read_csv(config.private_dir / config.data.competition / SOLUTION, dtype={"file": str})
    public, private = score(submission, solution)
    row = {
        "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
        "competition": config.data.competition,
        "file": path.name,
        "sha256": digest,
        "message": submission_message(path, message),
        "public_score": round(public, 5),
        "private_score": round(private, 5),
    }
    with leaderboard_lock(config):
        board = read_leaderboard(config)
        scored = already_scored(
            board, config, path, digest
        )  # again under the lock: another process may have scored it meanwhile
        if scored is not None:
            return scored, False
        board = (
            pd.concat([board, pd.DataFrame([row])], ignore_index=True)
            if len(board)
            else pd.DataFrame([row], columns=LEADERBOARD_COLUMNS)
        )
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
        print(
            f"{path.name}: {already}public score {row['public_score']:.5f} (accuracy on "
            "the public part of the test set; `make leaderboard` shows the private score)"
        )
    else:
        from pipeline.data import kaggle_client

        kaggle_client.submit(config, path, message)


def show_leaderboard(config: Config) -> None:
    board = leaderboard(config)
    print(
        board[["submitted", "file", "public_score", "private_score", "file_check", "message"]].to_markdown(
            index=False, floatfmt=".5f"
        )
        if len(board)
        else "no scored submissions yet"
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.submit", __doc__)
    parser.add_argument("--file", default="", help="submission CSV (default: the newest of the competition)")
    parser.add_argument("--message", default="", help="submission message (default: the file's lineage)")
    parser.add_argument("--leaderboard", action="store_true", help="show the local leaderboard instead of submitting")
    args = parser.parse_args(argv)
    if args.leaderboard:
        return run_stage(show_leaderboard, args)
    return run_stage(lambda config: submit(config, args.file, args.message), args)


if __name__ == "__main__":
    sys.exit(main())
