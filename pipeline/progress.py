"""Progress of the long loops (CV folds and repeats, the regularizer grid, peer fits, a peer's CV
folds): one line as each item starts, with how many are done, the time so far and the time left.

The bodies of these loops print their own lines (a run's epochs, a peer's fit time), so the progress
is a line of its own rather than a bar under them, and reads the same on a terminal, in a notebook,
in CI and in a log file. The time left is the mean time of the items done so far times the items
left; items that finish at once (a run already trained, reused) are not counted in that mean, so a
resumed CV does not promise too little. Epochs on a terminal get a bar (pipeline.runs.fitting).
"""

from __future__ import annotations

import time

from pipeline.log import log


def duration(seconds: float) -> str:
    """3725 -> '1 h 02 min', 125 -> '2 min 05 s', 7 -> '7 s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


class Progress:
    """`progress.step("fold 2/5 ...")` prints `[2/15] fold 2/5 ...  (4 min 10 s so far, about 27 min left)`."""

    QUICK = 2.0  # seconds: an item this fast was reused, not worked on

    def __init__(self, total: int, workers: int = 1):
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.workers = workers  # processes sharing the items (the tuner's JOBS): the time left divides among them
        self.last: float | None = None
        self.worked: list[float] = []  # seconds of each item that did work

    def step(self, description: str, done: int | None = None) -> str:
        """Start the next item. `done`: the items finished before it, where other workers finish some too."""
        now = time.perf_counter()
        if self.last is not None:
            spent = now - self.last
            if spent >= self.QUICK:
                self.worked.append(spent)
        self.last = now
        self.done = self.done + 1 if done is None else done + 1
        line = f"[{self.done}/{self.total}] {description}"
        if self.done > 1:
            left = self.total - self.done + 1
            seconds = left * sum(self.worked) / len(self.worked) / self.workers if self.worked else 0.0
            estimate = f", about {duration(seconds)} left" if self.worked else ""
            line += f"  ({duration(now - self.started)} so far{estimate})"
        log.info(line)
        return line
