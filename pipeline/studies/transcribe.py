"""`make transcribe`: seq2seq activity transcription of continuous recordings, with attention alignments.

The HAPT recordings are continuous: activities and postural transitions follow one another. This
task reads a long stretch of signal (30 s to 6 min) and writes the ordered list of activities in
it, as speech recognition writes words; it asks the lecture's question: does attention beat a
fixed context vector C on long inputs?

Two tasks (transcribe.tasks), each in data/processed/<task folder>/, built from data/raw/hapt:
  recorded  segments cut from the recordings (30 s to 3 min); HAPT's protocol repeats one order
            of activities, so a decoder can learn much of a target from the order alone
  shuffled  bouts of the six activities (8 to 30 s, one subject) stitched in random order into
            segments of 1 to 6 minutes: an order that cannot be memorized
  input     one step per `frame_seconds` (2 s): mean and std of the 9 UCI HAR channels (18 features)
  target    the activities in the segment, in order; unlabeled stretches are skipped, labeled
            stretches shorter than `min_activity_seconds` (slivers cut by the segment's edges) are
            dropped, and consecutive repeats are merged
  splits    UCI HAR's test subjects and the usual validation subjects; the test inputs are scored
            clean and under the test noise profile (data.noise_profile at data.test_noise)
Training: `build_seq2seq` with teacher forcing, for the Bahdanau-attention and the fixed-context
variants, once per seed (transcribe.seeds). Decoding: greedy (every seed) and beam search (first seed).
Report (reports/transcribe/): activity error rate (edit distance / reference length) and exact
sequence accuracy by task and input length, clean and noisy, mean and spread over seeds, the
per-seed difference between the variants and whether its sign holds in every seed; alignment plots.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data.hapt import HAPT_FOLDER, read_hapt, split_of_subjects
from pipeline.data.signals import (
    ACTIVITY_NAMES,
    add_noise,
    channel_std,
    label_runs,
    preprocess_recording,
    window_starts,
)
from pipeline.files import atomic_folder, short_hash, write_json_atomic
from pipeline.log import log
from pipeline.models import END_TOKEN, FIRST_CLASS_TOKEN, PAD_TOKEN, START_TOKEN
from pipeline.progress import Progress, duration
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import regularizer_tag
from pipeline.runtime import backend_name, peak_rss_mb

FOLDER = "transcribe"
TASK_FOLDERS = {"recorded": FOLDER, "shuffled": f"{FOLDER}_shuffled"}
BASIC_ACTIVITIES = (1, 2, 3, 4, 5, 6)  # the shuffled task stitches these (a transition needs its neighbours)
VARIANTS = {"attention": True, "fixed_context": False}
# The seq2seq decoders' token ids (one home: pipeline.models)
PAD, START, END, FIRST = PAD_TOKEN, START_TOKEN, END_TOKEN, FIRST_CLASS_TOKEN


# ---- targets and inputs (pure) ---------------------------------------------------------------------


def activity_sequence(labels: np.ndarray, min_samples: int) -> list[int]:
    """Ordered activities of a labeled stretch: unlabeled (-1) skipped, runs shorter than `min_samples` dropped, repeats merged."""
    sequence: list[int] = []
    for start, stop, label in label_runs(labels):
        if label < 1 or stop - start < min_samples:
            continue
        if not sequence or sequence[-1] != label:
            sequence.append(label)
    return sequence


def frame_features(signals: np.ndarray, frame: int) -> np.ndarray:
    """(time, C) -> (time // frame, 2 C): mean and std of every channel over non-overlapping frames."""
    frames = signals[: len(signals) // frame * frame].reshape(-1, frame, signals.shape[1])
    return np.concatenate([frames.mean(1), frames.std(1)], axis=1).astype(np.float32)


def frame_labels(labels: np.ndarray, frame: int) -> np.ndarray:
    """The most common label of every frame (for drawing true activity boundaries)."""
    frames = labels[: len(labels) // frame * frame].reshape(-1, frame)
    return np.array([np.bincount(row - row.min()).argmax() + row.min() for row in frames])


def encode(sequence: list[int], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Activities -> (decoder input: START + tokens, decoder target: tokens + END), padded to max_length + 1."""
    tokens = [activity - 1 + FIRST for activity in sequence]
    previous = np.full(max_length + 1, PAD, np.int32)
    following = np.full(max_length + 1, PAD, np.int32)
    previous[: len(tokens) + 1] = [START, *tokens]
    following[: len(tokens) + 1] = [*tokens, END]
    return previous, following


def decode_tokens(tokens: list[int]) -> list[int]:
    return [token - FIRST + 1 for token in tokens if token >= FIRST]


def activity_error_rate(references: list[list[int]], hypotheses: list[list[int]]) -> float:
    """Total edit distance over total reference length (as word error rate is computed)."""
    distance = sum(Levenshtein.distance(reference, hypothesis) for reference, hypothesis in zip(references, hypotheses))
    return distance / max(1, sum(len(reference) for reference in references))


def exact_accuracy(references: list[list[int]], hypotheses: list[list[int]]) -> float:
    return float(np.mean([reference == hypothesis for reference, hypothesis in zip(references, hypotheses)]))


# ---- data --------------------------------------------------------------------------------------------


def _preprocessed(values: np.ndarray, config: Config) -> np.ndarray:
    data = config.data
    return preprocess_recording(
        values[:, 0:3],
        values[:, 3:6],
        data.sample_rate_hz,
        data.median_kernel,
        data.lowpass_hz,
        data.lowpass_order,
        data.gravity_hz,
    )


def build_segments(recordings: list[tuple[int, np.ndarray]], config: Config) -> pd.DataFrame:
    """The recorded task: every segment of every length, cut from the recordings as they are.
    Columns: subject, seconds, features (steps, 18), frames (frame labels), target."""
    task = config.transcribe
    rate = config.data.sample_rate_hz
    frame = int(round(task.frame_seconds * rate))
    rows = []
    for user, values in recordings:
        signals = _preprocessed(values, config)
        labels = values[:, 6].astype(np.int64)
        for seconds in task.lengths_seconds:
            length = int(round(seconds * rate)) // frame * frame
            for start in window_starts(len(signals), length, int(round(task.stride_seconds * rate))):
                piece = slice(start, start + length)
                sequence = activity_sequence(labels[piece], int(round(task.min_activity_seconds * rate)))
                if sequence:
                    rows.append(
                        {
                            "subject": user,
                            "seconds": seconds,
                            "features": frame_features(signals[piece], frame),
                            "frames": frame_labels(labels[piece], frame),
                            "target": sequence,
                        }
                    )
    return pd.DataFrame(rows)


def activity_bouts(recordings: list[tuple[int, np.ndarray]], config: Config) -> dict[int, dict[int, list[np.ndarray]]]:
    """subject -> activity -> frame features of each labeled bout of a basic activity (frames wholly
    inside the bout), for bouts of at least `shuffled_min_bout_seconds`."""
    task = config.transcribe
    rate = config.data.sample_rate_hz
    frame = int(round(task.frame_seconds * rate))
    shortest = int(round(task.shuffled_min_bout_seconds / task.frame_seconds))
    bouts: dict[int, dict[int, list[np.ndarray]]] = {}
    for user, values in recordings:
        signals = _preprocessed(values, config)
        for start, stop, label in label_runs(values[:, 6].astype(np.int64)):
            features = frame_features(signals[start:stop], frame)
            if label in BASIC_ACTIVITIES and len(features) >= shortest:
                bouts.setdefault(user, {}).setdefault(label, []).append(features)
    return bouts


def stitch(
    bouts: dict[int, list[np.ndarray]], steps: int, shortest: int, longest: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One shuffled segment of `steps` frames from one subject's bouts: activities drawn at random
    (never the same twice in a row), each a random stretch of `shortest`..`longest` frames of one of
    its bouts; the last is cut at `steps`. Returns (features, frame labels, target)."""
    activities = sorted(bouts)
    if len(activities) < 2:
        raise ValueError("stitching needs bouts of at least two activities")
    pieces, labels, target = [], [], []
    filled = 0
    while filled < steps:
        activity = int(rng.choice([a for a in activities if not target or a != target[-1]]))
        bout = bouts[activity][rng.integers(len(bouts[activity]))]
        length = min(int(rng.integers(shortest, longest + 1)), len(bout), steps - filled)
        offset = int(rng.integers(len(bout) - length + 1))
        pieces.append(bout[offset : offset + length])
        labels.append(np.full(length, activity))
        target.append(activity)
        filled += length
    return np.concatenate(pieces), np.concatenate(labels), target


def shuffled_segments(bouts: dict[int, dict[int, list[np.ndarray]]], config: Config) -> pd.DataFrame:
    """The shuffled task: `shuffled_segments_per_subject` stitched segments per subject and length."""
    task = config.transcribe
    rng = np.random.default_rng(config.data.seed)
    shortest = max(1, int(round(task.shuffled_min_bout_seconds / task.frame_seconds)))
    longest = max(shortest, int(round(task.shuffled_max_bout_seconds / task.frame_seconds)))
    rows = []
    for user in sorted(bouts):
        if len(bouts[user]) < 2:
            continue
        for seconds in task.shuffled_lengths_seconds:
            steps = max(1, int(round(seconds / task.frame_seconds)))
            for _ in range(task.shuffled_segments_per_subject):
                features, frames, target = stitch(bouts[user], steps, shortest, longest, rng)
                rows.append(
                    {"subject": user, "seconds": seconds, "features": features, "frames": frames, "target": target}
                )
    return pd.DataFrame(rows)


def task_data_settings(config: Config, task: str) -> dict[str, Any]:
    """The settings a task's data depend on (not the seeds, the decoding or the training budget)."""
    t = config.transcribe
    shared = {"task": task, "frame_seconds": t.frame_seconds}
    if task == "recorded":
        return {
            **shared,
            "lengths_seconds": list(t.lengths_seconds),
            "stride_seconds": t.stride_seconds,
            "min_activity_seconds": t.min_activity_seconds,
        }
    return {
        **shared,
        "lengths_seconds": list(t.shuffled_lengths_seconds),
        "min_bout_seconds": t.shuffled_min_bout_seconds,
        "max_bout_seconds": t.shuffled_max_bout_seconds,
        "segments_per_subject": t.shuffled_segments_per_subject,
    }


def prepare_transcription(config: Config, task: str = "recorded") -> Path:
    """data/raw/hapt -> data/processed/<task folder>/{train,validation,test}.npz and datacard.json (skipped when up to date)."""

    folder = config.processed_dir / TASK_FOLDERS[task]
    inputs = {"data": config.section_hash("data"), "task": task_data_settings(config, task)}
    card_path = folder / "datacard.json"
    if card_path.is_file() and json.loads(card_path.read_text()).get("inputs") == inputs:
        log.info(f"{folder}: up to date")
        return folder
    _manifest, recordings = read_hapt(config.raw_dir / HAPT_FOLDER)
    segments = (
        build_segments(recordings, config)
        if task == "recorded"
        else shuffled_segments(activity_bouts(recordings, config), config)
    )
    segments["split"] = split_of_subjects(segments["subject"].to_numpy(), config)
    max_steps = max(len(f) for f in segments["features"])
    max_length = max(len(t) for t in segments["target"])
    std = channel_std(np.concatenate(list(segments.loc[segments["split"] == "train", "features"]))[None])
    card: dict[str, Any] = {
        "inputs": inputs,
        "task": task,
        "features": 18,
        "frame_seconds": config.transcribe.frame_seconds,
        "max_steps": int(max_steps),
        "max_target_length": int(max_length),
        "feature_std": std.tolist(),
        "splits": {},
    }
    with atomic_folder(folder) as temp:
        for split in ("train", "validation", "test"):
            part = segments[segments["split"] == split].reset_index(drop=True)
            features = np.zeros((len(part), max_steps, 18), np.float32)
            frames = np.full((len(part), max_steps), -1, np.int64)
            targets = np.zeros((len(part), max_length), np.int64)
            for index, row in part.iterrows():
                features[index, : len(row["features"])] = row["features"]
                frames[index, : len(row["frames"])] = row["frames"]
                targets[index, : len(row["target"])] = row["target"]
            steps = part["features"].map(len).to_numpy()
            np.savez_compressed(
                temp / f"{split}.npz",
                features=features,
                steps=steps,
                frames=frames,
                targets=targets,
                target_length=part["target"].map(len).to_numpy(),
                seconds=part["seconds"].to_numpy(),
                subject=part["subject"].to_numpy(),
            )
            card["splits"][split] = {
                "segments": int(len(part)),
                "subjects": sorted(int(s) for s in part["subject"].unique()),
                "segments_by_seconds": {
                    f"{s:g}": int(c) for s, c in part["seconds"].value_counts().sort_index().items()
                },
                "mean_target_length_by_seconds": {
                    f"{s:g}": round(float(v), 2)
                    for s, v in part.groupby("seconds")["target"].apply(lambda t: t.map(len).mean()).items()
                },
            }
        write_json_atomic(temp / "datacard.json", card)
    log.info(
        f"wrote {folder}: "
        + ", ".join(f"{s} {c['segments']}" for s, c in card["splits"].items())
        + f" segments; targets up to {max_length} activities"
    )
    return folder


@dataclasses.dataclass
class Segments:
    features: list[np.ndarray]
    frames: list[np.ndarray]
    targets: list[list[int]]
    seconds: np.ndarray


def load_segments(folder: Path, split: str) -> Segments:
    with np.load(folder / f"{split}.npz") as archive:
        content = {key: archive[key] for key in archive.files}
    features = [content["features"][i, :n] for i, n in enumerate(content["steps"])]
    frames = [content["frames"][i, :n] for i, n in enumerate(content["steps"])]
    targets = [content["targets"][i, :n].tolist() for i, n in enumerate(content["target_length"])]
    return Segments(features, frames, targets, content["seconds"])


# ---- training --------------------------------------------------------------------------------------


def batches(segments: Segments, max_length: int, batch_size: int, seed: int, shuffle: bool) -> Any:
    """A PyDataset of same-length batches ((features, previous tokens), next tokens, weights that mask PAD)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self._plan()

        def _plan(self) -> None:
            rng = np.random.default_rng(seed + self.epoch)
            self.plan = []
            for seconds in np.unique(segments.seconds):
                members = np.flatnonzero(segments.seconds == seconds)
                if shuffle:
                    members = rng.permutation(members)
                self.plan += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
            if shuffle:
                self.plan = [self.plan[i] for i in rng.permutation(len(self.plan))]
            # Keras infers the input signature from the first two batches: let them differ in length,
            # so the time axis is seen as variable.
            other = next(
                (i for i, b in enumerate(self.plan) if segments.seconds[b[0]] != segments.seconds[self.plan[0][0]]),
                None,
            )
            if other is not None and len(self.plan) > 1:
                self.plan[1], self.plan[other] = self.plan[other], self.plan[1]

        def __len__(self) -> int:
            return len(self.plan)

        def __getitem__(self, index: int) -> Any:
            members = self.plan[index]
            encoded = [encode(segments.targets[m], max_length) for m in members]
            previous = np.stack([e[0] for e in encoded])
            following = np.stack([e[1] for e in encoded])
            features = np.stack([segments.features[m] for m in members])
            return (features, previous), following, (following != PAD).astype(np.float32)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._plan()

    return Batches()


def run_name(config: Config, variant: str, task: str) -> str:
    """transcribe[_shuffled]_<variant>_<hash of everything the model depends on>."""
    model_config = config.model.with_own("seq2seq", attention=VARIANTS[variant])
    t = config.transcribe
    # The data, the model and its regularizers, the task's data and training budget, the seed: not the
    # other tasks, the list of seeds or the decoding, which do not change this model.
    content = {k: v for k, v in config.to_dict().items() if k in ("data", "regularization", "augment")}
    content["model"] = dataclasses.asdict(model_config)
    content["task"] = task_data_settings(config, task)
    content["budget"] = {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "patience": t.patience,
        "learning_rate": t.learning_rate,
        "max_train_segments": t.max_train_segments,
    }
    content["seed"] = config.train.seed
    if backend_name() != "tensorflow":
        content["backend"] = backend_name()
    fingerprint = short_hash(content, default=list)
    return f"{TASK_FOLDERS[task]}_{variant}_{fingerprint}"


def train_variant(config: Config, variant: str, task: str, folder: Path, card: dict) -> Path:
    """Train one seq2seq variant of one task with config.train.seed (reused when already trained)."""
    import keras

    from pipeline import models

    model_config = dataclasses.replace(config, model=config.model.with_own("seq2seq", attention=VARIANTS[variant]))
    run = RunFolder.of(config, run_name(config, variant, task))
    run_dir = run.path
    if run.finished:
        log.info(f"{run_dir}: already trained")
        return run_dir
    keras.utils.set_random_seed(config.train.seed)
    train_set, validation_set = load_segments(folder, "train"), load_segments(folder, "validation")
    if config.transcribe.max_train_segments and len(train_set.targets) > config.transcribe.max_train_segments:
        keep = np.sort(
            np.random.default_rng(config.train.seed).choice(
                len(train_set.targets), config.transcribe.max_train_segments, replace=False
            )
        )
        train_set = Segments(
            [train_set.features[i] for i in keep],
            [train_set.frames[i] for i in keep],
            [train_set.targets[i] for i in keep],
            train_set.seconds[keep],
        )
    stacked = np.concatenate(train_set.features)
    max_length = card["max_target_length"]
    model = models.build_seq2seq(model_config, (None, 18), 12, max_length + 1, stacked.mean(0), stacked.var(0))
    model.compile(
        optimizer=keras.optimizers.Adam(config.transcribe.learning_rate, clipnorm=1.0),
        loss="sparse_categorical_crossentropy",
        weighted_metrics=[],
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    history = model.fit(
        batches(train_set, max_length, config.transcribe.batch_size, config.train.seed, shuffle=True),
        validation_data=batches(
            validation_set, max_length, config.transcribe.batch_size, config.train.seed, shuffle=False
        ),
        epochs=config.transcribe.epochs,
        callbacks=[
            keras.callbacks.EarlyStopping(patience=config.transcribe.patience, restore_best_weights=True),
            keras.callbacks.CSVLogger(str(run.history_file)),
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: log.info(
                    f"  {task} {variant} seed {config.train.seed} epoch {epoch + 1}/{config.transcribe.epochs}: "
                    f"loss {logs['loss']:.4f}, validation loss {logs['val_loss']:.4f}",
                )
            ),
        ],
        verbose=0 if not sys.stdout.isatty() else 1,
    )
    seconds = time.perf_counter() - started
    losses = history.history["val_loss"]
    # The registry's files: `make runs` lists the run as complete.
    lineage = Lineage(
        run_id=run_dir.name,
        experiment="transcribe",
        competition=TASK_FOLDERS[task],
        model=f"seq2seq_{variant}",
        seed=config.train.seed,
        regularizer=regularizer_tag(config),
        backend=backend_name(),
    )
    metrics = {
        "monitor": "val_loss",
        "best_epoch": int(np.argmin(losses)) + 1,
        "epochs_run": len(losses),
        "best_validation_loss": float(min(losses)),
        "train_seconds": round(seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    run.finish(model, metrics, config=model_config.to_dict(), lineage=lineage)
    log.info(f"trained {run_dir.name}: {len(losses)} epochs, best validation loss {min(losses):.4f}, {seconds:.0f}s")
    return run_dir


# ---- decoding and the report -----------------------------------------------------------------------------


def decode(
    decoder: Any, features: list[np.ndarray], max_length: int, beam_width: int = 0, label: str = ""
) -> list[Any]:
    """Decode every segment (grouped by input length, since a batch shares one length), saying how far it is."""
    results: list[Any] = [None] * len(features)
    lengths = np.array([len(f) for f in features])
    started, done = time.perf_counter(), 0
    for steps in np.unique(lengths):
        members = np.flatnonzero(lengths == steps)
        batch = np.stack([features[m] for m in members])
        decoded = decoder.beam(batch, max_length, beam_width) if beam_width else decoder.greedy(batch, max_length)
        for member, result in zip(members, decoded):
            results[member] = result
        done += len(members)
        if label:
            elapsed = time.perf_counter() - started
            left = elapsed / done * (len(features) - done)  # segments of every length take about as long
            log.info(
                f"    {label}: {done} of {len(features)} segments (inputs of {steps} steps done), "
                f"{duration(elapsed)} so far, about {duration(left)} left"
            )
    return results


def score_variant(
    run_dir: Path, test: Segments, noisy: list[np.ndarray], card: dict, config: Config, beam: bool
) -> tuple[pd.DataFrame, list[Any]]:
    """Greedy decoding of every test segment, clean and noisy; beam search on `beam_segments` per length when `beam`."""
    from pipeline import models

    decoder = models.Seq2SeqDecoder(RunFolder(run_dir).load_model())
    max_length = card["max_target_length"] + 1
    rows, kept = [], []
    # Beam search decodes one segment at a time: it scores the first `beam_segments` of each length.
    beam_subset = np.concatenate(
        [np.flatnonzero(test.seconds == s)[: config.transcribe.beam_segments] for s in np.unique(test.seconds)]
    )
    methods = (("greedy", 0), ("beam", config.transcribe.beam_width)) if beam else (("greedy", 0),)
    for condition, features in (("clean", test.features), ("noisy", noisy)):
        for method, width in methods:
            subset = np.arange(len(features)) if method == "greedy" else beam_subset
            decoded = decode(
                decoder,
                [features[i] for i in subset],
                max_length,
                width,
                label=f"decoding {run_dir.name}, {condition} test, {method}",
            )
            hypotheses = dict(zip(subset.tolist(), (decode_tokens(result.tokens) for result in decoded)))
            if condition == "clean" and method == "greedy":
                kept = decoded
            for seconds in np.unique(test.seconds):
                members = np.intersect1d(np.flatnonzero(test.seconds == seconds), subset)
                references = [test.targets[m] for m in members]
                chosen = [hypotheses[m] for m in members]
                rows.append(
                    {
                        "condition": condition,
                        "decoding": method,
                        "seconds": float(seconds),
                        "segments": len(members),
                        "activity_error_rate": activity_error_rate(references, chosen),
                        "exact_accuracy": exact_accuracy(references, chosen),
                    }
                )
    return pd.DataFrame(rows), kept


def across_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Greedy activity error rate per task, condition and length: mean ± std over seeds for each
    variant, the per-seed difference (attention - fixed context), and whether its sign holds in every seed."""
    greedy = table[table["decoding"] == "greedy"]
    wide = greedy.pivot_table(
        index=["task", "condition", "seconds", "seed"], columns="variant", values="activity_error_rate"
    ).reset_index()
    rows = []
    for (task, condition, seconds), group in wide.groupby(["task", "condition", "seconds"], sort=False):
        difference = (group["attention"] - group["fixed_context"]).to_numpy()
        if len(difference) > 1 and (difference < 0).all():
            verdict = "attention lower in every seed"
        elif len(difference) > 1 and (difference > 0).all():
            verdict = "fixed context lower in every seed"
        else:
            verdict = "mixed" if len(difference) > 1 else "one seed: no conclusion"
        spread = lambda values: f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"  # noqa: E731
        rows.append(
            {
                "task": task,
                "condition": condition,
                "input": f"{seconds:g} s",
                "attention": spread(group["attention"]),
                "fixed context": spread(group["fixed_context"]),
                "per seed (attention - fixed)": ", ".join(f"{d:+.3f}" for d in difference),
                "across seeds": verdict,
            }
        )
    return pd.DataFrame(rows)


def plot_alignment(
    path: Path,
    alignment: np.ndarray,
    decoded: list[int],
    frames: np.ndarray,
    truth: list[int],
    frame_seconds: float,
    title: str,
) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.0), dpi=110)
    axis = figure.subplots()
    image = axis.imshow(
        alignment,
        aspect="auto",
        cmap="viridis",
        extent=(0, alignment.shape[1] * frame_seconds, alignment.shape[0] - 0.5, -0.5),
    )
    changes = np.flatnonzero(np.diff(frames)) + 1
    for change in changes:
        axis.axvline(change * frame_seconds, color="white", linestyle="--", linewidth=0.8)
    labels = [ACTIVITY_NAMES.get(a, "?") for a in decoded] + ["<end>"]
    axis.set_yticks(range(len(labels)), labels[: alignment.shape[0]], fontsize=7)
    axis.set_xlabel("input time (s); dashed lines: true activity boundaries")
    axis.set_ylabel("decoder step (output)")
    axis.set_title(
        title + "\n" + textwrap.fill("truth: " + " > ".join(ACTIVITY_NAMES[a] for a in truth), 150), fontsize=7
    )
    figure.colorbar(image, ax=axis, label="attention weight")
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_error_vs_length(path: Path, table: pd.DataFrame) -> None:
    """Greedy activity error rate against input length, one panel per task: mean over seeds, min-max band."""
    from matplotlib.figure import Figure

    greedy = table[table["decoding"] == "greedy"]
    tasks = list(dict.fromkeys(greedy["task"]))
    figure = Figure(figsize=(5.5 * len(tasks), 4.2), dpi=110)
    axes = np.atleast_1d(figure.subplots(1, len(tasks)))
    for axis, task in zip(axes, tasks):
        for (variant, condition), rows in greedy[greedy["task"] == task].groupby(["variant", "condition"]):
            by_length = rows.groupby("seconds")["activity_error_rate"].agg(["mean", "min", "max"])
            line = axis.plot(
                by_length.index,
                by_length["mean"],
                marker="o",
                linestyle="-" if condition == "clean" else "--",
                label=f"{variant}, {condition} test",
            )[0]
            axis.fill_between(by_length.index, by_length["min"], by_length["max"], color=line.get_color(), alpha=0.15)
        axis.set(xlabel="input length (s)", ylabel="activity error rate", title=f"{task} task")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    seeds = greedy["seed"].nunique()
    figure.suptitle(f"fixed context C against Bahdanau attention (greedy; mean over {seeds} seed(s), band: min to max)")
    figure.tight_layout()
    figure.savefig(path, format="png")


def transcribe(config: Config) -> Path:
    seeds = config.transcribe.seeds or (config.train.seed,)
    tasks = config.transcribe.tasks
    log.info(
        f"transcribe: {len(tasks)} task(s) x {len(seeds)} seed(s) x {len(VARIANTS)} variants = "
        f"{len(tasks) * len(seeds) * len(VARIANTS)} models; greedy decoding for every one, beam search for seed {seeds[0]}",
    )
    started = time.perf_counter()
    progress = Progress(len(tasks) * len(seeds) * len(VARIANTS))
    tables, examples, cards = [], {}, {}
    for task in tasks:
        folder = prepare_transcription(config, task)
        card = cards[task] = json.loads((folder / "datacard.json").read_text())
        test = load_segments(folder, "test")
        std = np.array(card["feature_std"])
        # One noise draw per test segment, the same for every seed: the seeds vary the training only.
        noisy = [
            add_noise(f[None], config.data.noise_profile, config.data.test_noise, std, config.train.seed + i)[0]
            for i, f in enumerate(test.features)
        ]
        for number, seed in enumerate(seeds):
            seeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
            for variant in VARIANTS:
                progress.step(f"{task}, seed {seed}, {variant}: training and decoding ...")
                run_dir = train_variant(seeded, variant, task, folder, card)
                table, decoded = score_variant(run_dir, test, noisy, card, config, beam=number == 0)
                tables.append(table.assign(task=task, seed=seed, variant=variant))
                if number == 0 and variant == "attention":
                    examples[task] = (test, decoded)
                log.info(
                    f"  {task}, seed {seed}, {variant}: done ({time.perf_counter() - started:.0f}s since the start)"
                )
    table = pd.concat(tables, ignore_index=True)
    summary = across_seeds(table)
    report = config.path("reports", FOLDER)
    with atomic_folder(report) as temp:
        table.to_csv(temp / "metrics.csv", index=False)
        summary.to_csv(temp / "across_seeds.csv", index=False)
        plot_error_vs_length(temp / "error_vs_length.png", table)
        for task, (test, decoded) in examples.items():
            longest = np.flatnonzero(test.seconds == test.seconds.max())[:3]
            for rank, index in enumerate(longest):
                result = decoded[index]
                if result.alignment is not None:
                    plot_alignment(
                        temp / f"alignment_{task}_{rank + 1}.png",
                        result.alignment,
                        decode_tokens(result.tokens),
                        test.frames[index],
                        test.targets[index],
                        config.transcribe.frame_seconds,
                        f"{task} task, test segment {index}: {test.seconds[index]:g} s, attention variant, seed {seeds[0]}",
                    )
        text = "# Activity transcription: fixed context against attention\n\n"
        for task in tasks:
            test_card = cards[task]["splits"]["test"]
            text += (
                f"## {task} task\n\nTest segments per length: {', '.join(f'{k} s: {v}' for k, v in test_card['segments_by_seconds'].items())}; "
                f"mean target length by segment length: {test_card['mean_target_length_by_seconds']}.\n\n"
                f"Greedy activity error rate (lower is better), mean ± std over seeds {', '.join(map(str, seeds))}:\n\n"
                + summary[summary["task"] == task].drop(columns="task").to_markdown(index=False)
                + "\n\n"
            )
        text += (
            "## All metrics (greedy every seed, beam the first; clean and noisy test)\n\n"
            + table.to_markdown(index=False, floatfmt=".3f")
            + "\n"
        )
        (temp / "comparison.md").write_text(text)
    print(summary.to_markdown(index=False))
    log.info(
        f"wrote {report}/comparison.md, metrics.csv, across_seeds.csv, error_vs_length.png, alignment_*.png ({time.perf_counter() - started:.0f}s)"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.studies.transcribe", __doc__)
    parser.add_argument("--prepare-only", action="store_true", help="build the tasks' data in data/processed/ and stop")
    args = parser.parse_args(argv)

    def prepare_tasks(config: Config) -> list[Path]:
        return [prepare_transcription(config, task) for task in config.transcribe.tasks]

    action = prepare_tasks if args.prepare_only else transcribe
    return run_stage(action, args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
