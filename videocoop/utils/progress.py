"""Progress and messages: rich bars on a terminal, and Python's ``logging`` for every line.

Library modules log through ``logging.getLogger(__name__)`` and never configure handlers.
What shows where is the driver's choice: the CLI attaches :func:`console_handler` (rich's
handler on a terminal, plain lines otherwise) for the length of a command, and a training
run attaches a file handler for its ``log.txt`` for the length of the run
(:func:`log_handlers`). A library user controls verbosity with the ``videocoop`` logger's
level as with any other library.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

LOGGER = "videocoop"
_console = None


def console():
    """The one rich Console shared by the bars and the rich log handler, so log lines print
    above live bars instead of through them."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console()
    return _console


def resolve_mode(mode: str) -> str:
    """``auto`` is ``rich`` on a terminal and ``plain`` otherwise (CI logs, pipes, files)."""
    if mode == "auto":
        return "rich" if sys.stdout.isatty() else "plain"
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


__all__ = ["Bars", "console", "console_handler", "file_handler", "format_epoch", "log_handlers", "resolve_mode"]
