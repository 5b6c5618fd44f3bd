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
from numbers import Real
from pathlib import Path

import numpy as np

from ..utils.config import config_from_dict
from ..utils.errors import InputError, VideoCoopError
from ..utils.files import write_text
from ..utils.progress import Bars, format_epoch
from ..utils.readers import check_fields, load_array, read_json_object, read_text
from .checkpoint import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint
from .config import ACTION_KEYS, EXECUTION_KEYS, PATH_KEYS, TrainConfig

log = logging.getLogger(__name__)
# The files a training run writes into its output_dir (--overwrite deletes exactly these).
METRICS_FILE = "metrics.jsonl"
RUN_FILES = ("config.json", METRICS_FILE, "summary.json", "log.txt", "eval.json", "curves.png", "confusion.png",
             "confusion.npy", CHECKPOINT_LAST, CHECKPOINT_BEST, "shots.json", "classes.json")
# and this folder, with --tensorboard
TENSORBOARD_DIR = "tensorboard"
#: The types of a metrics.jsonl row's keys (NaN allowed: a number the run measured).
METRIC_FIELDS = {"epoch": int, "train_loss": Real | None, "train_top1": Real | None, "val_loss": Real | None,
                 "val_top1": Real | None, "val_top5": Real | None, "select_top1": Real | None, "lr": Real | None,
                 "seconds": Real | None, "untrained": bool}
#: The types of summary.json's keys that plot and sweep read.
SUMMARY_FIELDS = {"model": dict, "selection": dict | None, "untrained_val_top1": Real | None,
                  "final_val_top1": Real | None, "final_val_top5": Real | None, "final_train_loss": Real | None,
                  "final_train_top1": Real | None, "best_epoch": int, "best_top1": Real, "best_metric": str,
                  "epochs": int, "classnames": list[str], "per_class": dict[str, Real], "base_top1": Real,
                  "novel_top1": Real, "hm": Real}
RUN_FIX = "videocoop train writes it; restore it from the run, or delete it and train again"


def read_config(path: Path) -> dict:
    """A run's ``config.json``, each value of its field's type (:class:`TrainConfig`).

    Raises:
        InputError: a damaged file, an unknown key, a value of another type.
    """
    config = read_json_object(path, "pass --overwrite to replace the run, or choose another --output-dir")
    config_from_dict(TrainConfig, {k: v for k, v in config.items() if k not in ACTION_KEYS}, path=path)
    return config


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
                f"{config_path} records a run with a different config ({detail}); --resume continues the same run "
                f"only: drop --resume and pass --overwrite to replace it, or choose another --output-dir"
            )
    elif cfg.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def read_metrics(path: Path) -> list[dict]:
    """The rows of ``metrics.jsonl``, each a JSON object with an integer ``epoch`` and the
    numbers of :data:`METRIC_FIELDS`. A last line without its newline that is not JSON is
    skipped: a kill mid-write tears it, and ``--resume`` writes that epoch again.

    Raises:
        InputError: any other line that is not such a row, naming the line and the key.
    """
    lines = read_text(path).split("\n")
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            if n == len(lines):  # the torn last line
                continue
            raise InputError(path, f"not a JSON object ({e})", at=f"line {n}", fix=RUN_FIX) from e
        if not isinstance(row, dict):
            raise InputError(path, f"holds {json.dumps(row)[:60]}, not a JSON object", at=f"line {n}", fix=RUN_FIX)
        check_fields(row, METRIC_FIELDS, path, required=("epoch",), at=f"line {n}", fix=RUN_FIX)
        if row["epoch"] < 0:
            raise InputError(path, f"found {row['epoch']}, expected an epoch >= 0", at=f'line {n}, key "epoch"',
                             fix=RUN_FIX)
        rows.append(row)
    return rows


def resumed_rows(out: Path, first_epoch: int) -> list[dict]:
    """The ``metrics.jsonl`` rows a resumed run keeps: those of the epochs before ``first_epoch``
    (a kill between the metrics line and the checkpoint leaves a line too many).

    Raises:
        InputError: a damaged file, or one that lacks a finished epoch's row.
    """
    path = out / METRICS_FILE
    rows = [r for r in read_metrics(path) if r["epoch"] < first_epoch] if path.is_file() else []
    missing = sorted(set(range(1, first_epoch)) - {r["epoch"] for r in rows})
    if missing:
        raise InputError(path, f"lacks the rows of epochs {missing[:10]}, which {CHECKPOINT_LAST} has finished",
                         fix="restore it from a copy of the run, or pass --overwrite to train anew")
    return rows


def read_summary(path: Path) -> dict:
    """A run's ``summary.json``, its numbers and class lists typed (:data:`SUMMARY_FIELDS`)."""
    return read_json_object(path, RUN_FIX, fields=SUMMARY_FIELDS)


def read_confusion(path: Path, classes: int) -> np.ndarray:
    """A run's ``confusion.npy``: a ``[classes, classes]`` array of counts (finite, >= 0), never
    unpickled; ``classes`` is the number its ``summary.json`` lists.

    Raises:
        InputError: cut short, pickled objects, another dtype or shape, negative or NaN counts.
    """
    fix = "delete it to draw the per-class bars alone (videocoop train writes it for the last epoch)"
    holds = f"the [{classes}, {classes}] counts of the run's predictions on its validation split"
    confusion = load_array(path, holds, ndim=2, fix=fix)
    if confusion.shape != (classes, classes):
        raise InputError(path, f"holds a {list(confusion.shape)} array; expected {holds} ({path.parent / 'summary.json'} "
                               f"lists {classes} classes)", fix=fix)
    if (confusion < 0).any():
        raise InputError(path, f"holds negative counts; expected {holds}", fix=fix)
    return confusion


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


__all__ = ["METRICS_FILE", "METRIC_FIELDS", "RUN_FILES", "Recorder", "SUMMARY_FIELDS", "TENSORBOARD_DIR", "append_metrics",
           "check_output", "read_config", "read_confusion", "read_metrics", "read_summary", "resumed_rows", "run_state",
           "start_output", "tensorboard_writer", "truncate_metrics"]
