"""Checkpoints: the trainable state, the optimiser, the schedule and every RNG, written
atomically and read back without unpickling anything but tensors and plain data."""
from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..utils.errors import VideoCoopError
from ..utils.files import atomic_write, load_error

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
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
