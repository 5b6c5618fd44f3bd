"""Progress and messages: rich bars on a terminal, and Python's ``logging`` for every line.

Library modules log through ``logging.getLogger(__name__)`` and never configure handlers.
What shows where is the driver's choice: the CLI attaches :func:`console_handler` (rich's
handler on a terminal, plain lines otherwise) for the length of a command, and a training
run attaches a file handler for its ``log.txt`` for the length of the run
(:func:`log_handlers`). A library user controls verbosity with the ``videocoop`` logger's
level as with any other library.

Two kinds of progress share the console and the ``--progress`` modes: :class:`Bars`
(training: epochs and batches, on standard output) and :class:`Progress` (extraction and
predict: videos done, videos/s, frames/s, on standard error, since predict may be writing
its CSV to standard output).
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

LOGGER = "videocoop"
#: What ``--progress`` takes: auto (rich on a terminal, plain otherwise) | rich | plain | none.
PROGRESS = ("auto", "rich", "plain", "none")
_consoles: dict[bool, object] = {}  # stderr? -> its rich Console


def console(stderr: bool = False):
    """The one rich Console per stream, shared by the bars and the rich log handler, so log
    lines print above live bars instead of through them."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr)
    return _consoles[stderr]


def resolve_mode(mode: str, stderr: bool = False) -> str:
    """``auto`` is ``rich`` when the stream shown on (standard output, or standard error with
    ``stderr``) is a terminal and ``plain`` otherwise (CI logs, pipes, files)."""
    if mode == "auto":
        return "rich" if (sys.stderr if stderr else sys.stdout).isatty() else "plain"
    return mode


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"videocoop: {record.levelname.lower()}: {message}"


def console_handler(mode: str = "auto") -> logging.Handler | None:
    """A handler showing the ``videocoop`` loggers' messages on the console: rich's on a
    terminal (``rich``), plain lines on standard output (``plain``), None for ``none``."""
    mode = resolve_mode(mode)
    if mode == "none":
        return None
    if mode == "rich":
        from rich.logging import RichHandler

        return RichHandler(console=console(), show_time=False, show_level=False, show_path=False, markup=False)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_PlainFormatter())
    return handler


def file_handler(path: str | Path) -> logging.Handler:
    """A run's ``log.txt``: every line, time-stamped, appended (a resumed run continues it)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


@contextlib.contextmanager
def log_handlers(*handlers: logging.Handler | None) -> Iterator[None]:
    """Attach ``handlers`` to the ``videocoop`` logger for the block, then detach and close them.

    The logger passes INFO for the block when its level was left unset (a level the user
    set is theirs to keep); nothing else of the logging state is touched.
    """
    logger = logging.getLogger(LOGGER)
    handlers = [h for h in handlers if h is not None]
    level = logger.level
    if level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    for h in handlers:
        logger.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(level)


def format_epoch(epoch: int, epochs: int, row: Mapping) -> str:
    """One epoch's line of the log, from its ``metrics.jsonl`` row."""
    parts = [f"epoch {epoch}/{epochs}"]
    if row.get("train_loss") is not None:
        parts.append(f"train loss {row['train_loss']:.4f} acc {row['train_top1']:.2f}%")
    if row.get("val_top1") is not None:
        parts.append(f"val loss {row['val_loss']:.4f} top1 {row['val_top1']:.2f}% top5 {row['val_top5']:.2f}%")
    if row.get("select_top1") is not None:
        parts.append(f"select top1 {row['select_top1']:.2f}%")
    parts.append(f"lr {row['lr']:.2e}  {row['seconds']:.1f}s")
    return " | ".join(parts)


class Bars:
    """Rich progress bars (epochs, and the batches of the current epoch) in ``rich`` mode;
    nothing in the other modes, whose lines come from the log."""

    def __init__(self, mode: str = "auto"):
        self.mode = resolve_mode(mode)
        self._progress = None
        self._epoch_task = self._batch_task = None
        self._t0 = time.perf_counter()
        self._items = 0

    @property
    def shows_batches(self) -> bool:
        """Whether :meth:`batch` displays anything: a host sync per batch only then."""
        return self.mode == "rich"

    def start(self, epochs: int, first_epoch: int) -> None:
        if self.mode != "rich":
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console(), transient=False,
        )
        self._progress.start()
        self._epoch_task = self._progress.add_task("epochs", total=epochs, completed=first_epoch - 1, stats="")

    def begin_epoch(self, epoch: int, steps: int) -> None:
        self._t0, self._items = time.perf_counter(), 0
        if self._progress is None:
            return
        if self._batch_task is not None:
            self._progress.remove_task(self._batch_task)
        self._batch_task = self._progress.add_task(f"epoch {epoch}", total=steps, stats="")

    def batch(self, step: int, steps: int, loss: float, top1: float, lr: float, items: int) -> None:
        self._items += items
        if self._progress is None:
            return
        rate = self._items / max(time.perf_counter() - self._t0, 1e-9)
        stats = f"loss {loss:.3f}  acc {top1:5.1f}%  lr {lr:.2e}  {rate:,.0f} items/s"
        self._progress.update(self._batch_task, completed=step, stats=stats)

    def end_epoch(self, stats: str) -> None:
        if self._progress is not None:
            self._progress.advance(self._epoch_task)
            self._progress.update(self._epoch_task, stats=stats)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class Progress:
    """Videos done, videos/s and frames/s, on standard error: a rich bar in ``rich`` mode, a
    plain line every ``every`` seconds in ``plain`` mode (at the end of a chunk, when its
    videos are all done, and at the last video), nothing with ``none``."""

    def __init__(self, mode: str, total: int, label: str = "extract", every: float = 10.0,
                 chunks: Sequence[Sequence] = ()):
        self.mode, self.total, self.label, self.every = resolve_mode(mode, stderr=True), total, label, every
        self.videos = self.frames = 0
        ends = [len(c) for c in chunks if len(c)]
        self._ends = {sum(ends[:i + 1]) for i in range(len(ends))}  # videos done when a chunk is
        self._t0 = self._last = time.perf_counter()
        self._bar = self._task = None
        if self.mode == "rich" and total:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, rate="")

    def rates(self) -> tuple[float, float]:
        """Videos/s and frames/s since the start."""
        seconds = max(time.perf_counter() - self._t0, 1e-9)
        return self.videos / seconds, self.frames / seconds

    def advance(self, frames: int) -> None:
        """One more video done, of ``frames`` frames (0 for one that failed)."""
        self.videos += 1
        self.frames += frames
        vps, fps = self.rates()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.videos, rate=f"{vps:.1f} videos/s  {fps:.0f} frames/s")
        elif self.mode == "plain" and (self.videos == self.total or (
                time.perf_counter() - self._last >= self.every and (not self._ends or self.videos in self._ends))):
            self._last = time.perf_counter()
            print(f"{self.label}: {self.videos}/{self.total} videos, {vps:.1f} videos/s, {fps:.0f} frames/s, "
                  f"{time.perf_counter() - self._t0:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


__all__ = ["PROGRESS", "Bars", "Progress", "console", "console_handler", "file_handler", "format_epoch",
           "log_handlers", "resolve_mode"]
