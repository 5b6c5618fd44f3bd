"""Pictures of a run, redrawn from its own files: ``curves.png`` from ``metrics.jsonl``,
``confusion.png`` from ``confusion.npy`` and ``summary.json``.

Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global backend switch,
no display needed. Each picture lands atomically like every other file of a run.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..utils.errors import VideoCoopError
from ..utils.files import write_bytes

#: Class names are written on the confusion matrix's axes up to this many classes.
MAX_LABELLED_CLASSES = 40


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())


def _series(rows: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    return [e for e, _ in pairs], [v for _, v in pairs]


def plot_curves(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Loss, top-1 (and top-5) and learning rate per epoch, from ``metrics.jsonl`` rows.

    Epoch 0 is the untrained prompts' evaluation. The model a run reports is the last
    epoch's; with a selection split its top-1 is drawn too and the epoch it chose is marked
    (nothing is marked on the test split's curve: nothing is chosen on it).
    """
    fig = _figure(12, 3.6)
    loss, acc, lr = fig.subplots(1, 3)
    for key, label, style in (("train_loss", "train", "-o"), ("val_loss", "validation", "-s")):
        x, y = _series(rows, key)
        if x:
            loss.plot(x, y, style, ms=3, label=label)
    for key, label, style in (("train_top1", "train top-1", "-o"), ("val_top1", "validation top-1", "-s"),
                              ("val_top5", "validation top-5", "--"), ("select_top1", "selection top-1", "-^")):
        x, y = _series(rows, key)
        if x:
            acc.plot(x, y, style, ms=3, label=label)
    acc_title = "accuracy"
    x, y = _series(rows, "val_top1")
    if x:
        acc_title = f"accuracy (last epoch {x[-1]}: validation top-1 {y[-1]:.1f}%)"
    sx, sy = _series(rows, "select_top1")
    if sx:
        chosen = int(np.argmax(sy))  # the first best, as training chose it
        acc.plot([sx[chosen]], [sy[chosen]], "*", ms=12, color="tab:orange", zorder=3)
        acc_title += f"\nchosen on the selection split: epoch {sx[chosen]}"
    x, y = _series([r for r in rows if r["epoch"] >= 1], "lr")
    lr.plot(x, y, "-o", ms=3)
    for ax, title, ylabel in ((loss, "loss", "cross-entropy"), (acc, acc_title, "%"), (lr, "learning rate", "lr")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    loss.legend(fontsize=8)
    acc.legend(fontsize=8)
    if any(v > 0 for v in y):
        lr.set_yscale("log")
    return _save(fig, Path(path))


def plot_confusion(confusion: np.ndarray | None, classnames: Sequence[str], per_class: Mapping[str, float],
                   path: str | Path, title: str = "") -> Path:
    """The confusion matrix (rows normalised: where each class's videos went) beside each
    class's top-1, sorted (best at the top); the matrix is left out when there is none."""
    n = len(classnames)
    tall = max(4.0, min(0.18 * n + 1.5, 40.0))
    fig = _figure(14 if confusion is not None else 7, tall)
    axes = fig.subplots(1, 2, width_ratios=[1.3, 1]) if confusion is not None else [None, fig.subplots()]
    if confusion is not None:
        ax = axes[0]
        rows = confusion.sum(1, keepdims=True)
        shown = ax.imshow(confusion / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(shown, ax=ax, shrink=0.6, label="share of the class's videos")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if n <= MAX_LABELLED_CLASSES:
            ax.set_xticks(range(n), classnames, rotation=90, fontsize=7)
            ax.set_yticks(range(n), classnames, fontsize=7)
        ax.set_title("confusion (rows sum to 1)")
    ax = axes[1]
    ranked = sorted(per_class.items(), key=lambda kv: kv[1])
    ax.barh(range(len(ranked)), [v for _, v in ranked], color="tab:blue")
    ax.set_yticks(range(len(ranked)), [c for c, _ in ranked], fontsize=7 if len(ranked) <= 60 else 4)
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 (%)")
    ax.set_title("per-class top-1")
    ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))


def plot_run(out: str | Path) -> list[Path]:
    """Draw (or redraw) a run folder's ``curves.png`` and ``confusion.png``.

    Works for any run with a ``metrics.jsonl``: finished, stopped, resumed or written by
    an older videocoop (without ``confusion.npy`` the picture holds the per-class bars of
    ``summary.json`` only; without ``summary.json`` there is no confusion picture).

    Raises:
        VideoCoopError: ``out`` holds no ``metrics.jsonl``; an InputError for a damaged
            ``metrics.jsonl``, ``summary.json`` or ``confusion.npy`` (:mod:`.rundir`'s readers).
    """
    from .rundir import METRICS_FILE, read_confusion, read_metrics, read_summary

    out = Path(out)
    if not (out / METRICS_FILE).is_file():
        raise VideoCoopError(f"{out} holds no {METRICS_FILE}: not a training run's folder")
    rows = read_metrics(out / METRICS_FILE)
    written = [plot_curves(rows, out / "curves.png")]
    if (out / "summary.json").is_file():
        summary = read_summary(out / "summary.json")
        classnames, per_class = summary.get("classnames", []), summary.get("per_class", {})
        confusion = read_confusion(out / "confusion.npy", len(classnames)) if (out / "confusion.npy").is_file() else None
        if per_class:
            written.append(plot_confusion(confusion, classnames, per_class, out / "confusion.png", _title(summary)))
    return written


def _title(summary: Mapping) -> str:
    """What the confusion picture shows: the last epoch's model, or (a run of an older
    videocoop) the epoch it chose on its validation folder."""
    if "best_epoch" in summary:
        return f"best epoch {summary['best_epoch']}: {summary.get('best_metric', 'top1')} {summary['best_top1']:.1f}%"
    final, epoch = summary.get("final_val_top1"), (summary.get("model") or {}).get("epoch", summary.get("epochs"))
    return f"epoch {epoch} (the last)" + ("" if final is None else f": validation top-1 {final:.1f}%")


__all__ = ["plot_confusion", "plot_curves", "plot_run"]
