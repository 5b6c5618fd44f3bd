"""Which epoch's model a run reports and loads.

The held-out split given with ``--val-feature-dir`` is the one a run is judged on (for the
datasets in docs/protocols.md, the official test list): its numbers are recorded every
epoch, but nothing is chosen on them. A run's model is the one after its last epoch
(``checkpoint_last.pt``), as CoOp's protocol reports it: that is what the summary's
headline numbers describe and what ``--eval-only``, ``predict`` and ``python -m checks
--eval-only`` load unless told otherwise. Choosing an epoch needs a split of its own,
``--select-feature-dir``, neither the test split nor sharing a file with it: the epoch with
the best top-1 there is kept as ``checkpoint_best.pt``, loaded only on request
(``--checkpoint best``), and every output that uses it says which split chose it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..utils.errors import VideoCoopError
from .checkpoint import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint
from .config import CHECKPOINTS


@dataclass
class Selection:
    """The best epoch so far on the selection split (``split``); none chosen while ``epoch`` is 0."""

    split: str  # the folder the epoch is chosen on (select_feature_dir)
    epoch: int = 0
    select_top1: float = -1.0  # top-1 on the selection split at that epoch: what chose it
    val_top1: float | None = None  # top-1 on the test split at that epoch: reported, never chosen on

    def update(self, epoch: int, select_top1: float, val_top1: float | None) -> bool:
        """Record ``epoch``'s numbers; True when it is the best so far on the selection split
        (the same on every process: the numbers are reduced over them)."""
        if select_top1 <= self.select_top1:
            return False
        self.epoch, self.select_top1, self.val_top1 = epoch, select_top1, val_top1
        return True

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """What ``summary.json`` says of the chosen epoch."""
        return {**self.to_dict(), "metric": "select_top1", "checkpoint": CHECKPOINT_BEST}


def describe(state: dict, path: Path) -> str:
    """A line naming the model a checkpoint holds and what chose its epoch."""
    chosen = state.get("selection")
    if path.name == CHECKPOINT_BEST and chosen:
        return (f"{path} (epoch {state.get('epoch', '?')}, chosen on {chosen['split']}: select top-1 "
                f"{chosen['select_top1']:.2f}%)")
    return f"{path} (epoch {state.get('epoch', '?')}, the last epoch trained)"


def load_run_checkpoint(out: str | Path, which: str = "last") -> tuple[dict, Path, str]:
    """The checkpoint of the run in ``out`` that ``which`` names, and :func:`describe`'s line.

    Args:
        which: ``last`` (the model after the last epoch) or ``best`` (the epoch chosen on
            the run's ``--select-feature-dir``; runs trained without one have none).

    Raises:
        VideoCoopError: an unknown ``which``; no such checkpoint; a ``checkpoint_best.pt``
            chosen on the test split by an older videocoop.
    """
    if which not in CHECKPOINTS:
        raise VideoCoopError(f"unknown checkpoint {which!r}; choose one of {', '.join(CHECKPOINTS)}")
    out = Path(out)
    path = out / (CHECKPOINT_LAST if which == "last" else CHECKPOINT_BEST)
    if which == "best" and not path.is_file():
        raise VideoCoopError(f"{out} has no {CHECKPOINT_BEST}: a run chooses an epoch only on a validation split "
                             f"of its own (videocoop train --select-feature-dir DIR); use --checkpoint last")
    if not path.is_file():
        raise VideoCoopError(f"{out} has no {CHECKPOINT_LAST}: the run has not finished an epoch")
    state = load_checkpoint(path)
    if which == "best" and not state.get("selection"):
        raise VideoCoopError(f"{path} was chosen on the run's test split (--val-feature-dir) by an older videocoop: "
                             f"its numbers are optimistic; use --checkpoint last, or train again with "
                             f"--select-feature-dir DIR")
    return state, path, describe(state, path)


__all__ = ["CHECKPOINTS", "Selection", "describe", "load_run_checkpoint"]
