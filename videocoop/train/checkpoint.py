"""Checkpoints: the trainable state, the optimiser, the schedule and every RNG, written
atomically and read back without unpickling anything but tensors and plain data."""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..utils.errors import VideoCoopError
from ..utils.files import atomic_write, load_error

log = logging.getLogger(__name__)
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def rng_state() -> dict:
    """The global generators' states (torch, numpy, python, CUDA). The run's own draws (the
    order of the videos, their frames) are functions of (seed, epoch) and need none of
    them; these are kept for whatever else a model might draw (dropout, say)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore what :func:`rng_state` saved. The CUDA generators are restored for the devices
    both runs see, in order: a run resumed with fewer visible GPUs than it was saved with
    restores the first ones (``torch.cuda.set_rng_state_all`` would index past the device
    list), one with more leaves the others as they are; the log says which."""
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    saved = list(state.get("cuda", ()))
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, generator in enumerate(saved[:visible]):
        torch.cuda.set_rng_state(generator, index)
    if saved and len(saved) != visible:
        kept = min(len(saved), visible)
        what = f"restored those of cuda:0..{kept - 1}" if kept else "none restored"
        log.info(f"the checkpoint holds the CUDA generator states of {len(saved)} device(s), {visible} visible here: "
                 f"{what} (the run's own draws, its batches and frames, do not depend on them)")


def save_checkpoint(path: str | os.PathLike, **state) -> Path:
    """Write ``state`` (tensors, dicts, plain values) atomically: a temporary file, synced to
    disk, then a rename. A run killed (or a machine losing power) mid-write keeps the
    previous checkpoint intact.
    """
    return atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only).

    Raises:
        VideoCoopError: a missing or unreadable file.
    """
    if not os.path.isfile(path):
        raise VideoCoopError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign files raise many types
        raise load_error(path, e, "the tensors and plain values videocoop train saves") from e


__all__ = ["CHECKPOINT_BEST", "CHECKPOINT_LAST", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
