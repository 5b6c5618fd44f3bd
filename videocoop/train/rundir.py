"""The output folder of a run: what it holds, and the policy that nothing in it is lost.

A folder holding a run (a checkpoint or metrics) is continued only with ``resume`` and
replaced only with ``overwrite``, and an overwritten run is deleted only once the new one
is built and checked. :class:`Recorder` writes each epoch's row into it (the metrics file,
the log, TensorBoard) and shows it on the bars.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ..utils.errors import VideoCoopError
from ..utils.files import read_json_object, write_text
from ..utils.progress import Bars, format_epoch
from .checkpoint import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint
from .config import EXECUTION_KEYS, PATH_KEYS, TrainConfig

log = logging.getLogger(__name__)
# The files a training run writes into its output_dir (--overwrite deletes exactly these).
METRICS_FILE = "metrics.jsonl"
RUN_FILES = ("config.json", METRICS_FILE, "summary.json", "log.txt", "eval.json", "curves.png", "confusion.png",
             "confusion.npy", CHECKPOINT_LAST, CHECKPOINT_BEST, "shots.json", "classes.json")
# and this folder, with --tensorboard
TENSORBOARD_DIR = "tensorboard"


def read_config(path: Path) -> dict:
    """A run's ``config.json``."""
    return read_json_object(path, "pass --overwrite to replace the run, or choose another --output-dir")


def same_setting(key: str, old, new) -> bool:
    if old == new:
        return True
    if key in PATH_KEYS and old and new:
        return os.path.realpath(old) == os.path.realpath(new)
    return old == new


def run_state(out: Path) -> str | None:
    """What ``out`` holds: None (no run), ``started`` (no checkpoint yet), ``stopped`` or ``finished``."""
    if (out / "summary.json").is_file():
        return "finished"
    if (out / CHECKPOINT_LAST).is_file():
        return "stopped"
    if (out / CHECKPOINT_BEST).is_file() or (out / METRICS_FILE).is_file():
        return "started"
    return None


def check_output(cfg: TrainConfig, out: Path) -> None:
    """Refuse a folder holding a run that this call would lose, before anything is built or written.

    A run is continued only with ``resume`` and replaced only with ``overwrite``; without
    either, a folder holding one is an error that says both.
    """
    state = run_state(out)
    elsewhere = "or choose another --output-dir"
    if cfg.resume:
        if state != "stopped" and state != "finished":
            started = "; the run there stopped before its first epoch ended: pass --overwrite to start it again" \
                if state == "started" else ""
            raise VideoCoopError(f"--resume: no {CHECKPOINT_LAST} in {out} to resume from{started}")
        return
    if state is None or cfg.overwrite:
        return
    replace = "--overwrite to replace it (its checkpoints, metrics and log are deleted)"
    if state == "started":
        raise VideoCoopError(f"{out} holds the start of a run that stopped before its first epoch ended (no "
                             f"{CHECKPOINT_LAST}): pass {replace}, {elsewhere}")
    try:
        epoch = load_checkpoint(out / CHECKPOINT_LAST)["epoch"] if state == "stopped" else None
    except VideoCoopError:
        epoch = None
    try:
        epochs = read_config(out / "config.json")["epochs"]
    except (VideoCoopError, KeyError):
        epochs = "?"
    if state == "finished":
        raise VideoCoopError(f"{out} holds a finished run ({epochs} epochs; summary.json): nothing to continue. "
                             f"Pass {replace}, {elsewhere}; --eval-only evaluates it")
    after = f"after epoch {epoch} of {epochs}" if epoch is not None else "part-way"
    raise VideoCoopError(f"{out} holds a run stopped {after}: pass --resume to continue it, {replace}, {elsewhere}")


def start_output(cfg: TrainConfig, out: Path) -> None:
    """Once the run is built and checked: a resumed run must be the same run; an overwritten
    one is deleted now, not before (a bad new config loses nothing)."""
    config_path = out / "config.json"
    if cfg.resume and config_path.is_file():
        old, new = read_config(config_path), cfg.to_dict()
        keys = sorted(k for k in set(old) | set(new) if k not in EXECUTION_KEYS)
        diff = [k for k in keys if not same_setting(k, old.get(k), new.get(k))]
        if diff:
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
            raise VideoCoopError(
                f"{out} holds a run with a different config ({detail}); --resume continues the same run only: "
                f"drop --resume and pass --overwrite to replace it, or choose another --output-dir"
            )
    elif cfg.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def read_metrics(path: Path) -> list[dict]:
    """The rows of ``metrics.jsonl``, skipping unparsable lines (a kill mid-write tears the last one)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def append_metrics(out: Path, row: dict) -> None:
    """One epoch's line of ``metrics.jsonl`` (a kill mid-write tears at most this line,
    which :func:`read_metrics` skips)."""
    with open(out / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def truncate_metrics(out: Path, first_epoch: int) -> None:
    """Keep the lines of epochs before ``first_epoch`` (resume: a kill between the metrics
    line and the checkpoint leaves one line too many), rewriting the file atomically."""
    path = out / METRICS_FILE
    rows = read_metrics(path) if path.is_file() else []
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows if r["epoch"] < first_epoch))


def tensorboard_writer(cfg: TrainConfig, out: Path, first_epoch: int):
    """A SummaryWriter for ``--tensorboard``; events of epochs from ``first_epoch`` on, left by
    a killed run, are purged so a resumed run writes each epoch once."""
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise VideoCoopError("--tensorboard needs the tensorboard package: pip install 'videocoop[tensorboard]'") from e
    return SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=first_epoch)


class Recorder:
    """The epochs' rows: kept for the summary; on rank 0 also appended to the metrics file,
    logged, shown by the bars and written to TensorBoard."""

    def __init__(self, cfg: TrainConfig, out: Path, main: bool, first_epoch: int, rows: list[dict]):
        self.cfg, self.out, self.main, self.rows = cfg, out, main, rows
        self.bars = Bars(cfg.progress if main else "none")
        self.board = tensorboard_writer(cfg, out, first_epoch) if main else None

    def record(self, row: dict) -> None:
        self.rows.append(row)
        if not self.main:
            return
        append_metrics(self.out, row)
        line = format_epoch(row["epoch"], self.cfg.epochs, row)
        log.info(line)
        self.bars.end_epoch(line.split("|")[0].strip())
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "select_top1", "lr"):
            if self.board is not None and row.get(key) is not None:
                self.board.add_scalar(key, row[key], row["epoch"])

    def close(self) -> None:
        self.bars.close()
        if self.board is not None:
            self.board.close()


__all__ = ["METRICS_FILE", "RUN_FILES", "Recorder", "TENSORBOARD_DIR", "append_metrics", "check_output", "read_config",
           "read_metrics", "run_state", "start_output", "tensorboard_writer", "truncate_metrics"]
