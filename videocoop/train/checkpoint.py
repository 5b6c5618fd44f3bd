"""Checkpoints: the trainable state, the optimiser, the schedule and every RNG, written
atomically and read back without unpickling anything but tensors and plain data.

:func:`load_checkpoint` is the one reader of a checkpoint (``--resume``, ``--eval-only``,
``videocoop predict``): it refuses another program's file naming what it holds, and
:func:`check_checkpoint` refuses one of another class list or model naming what differs.
:func:`diff_state` compares any state dict with a model's, for the trainer and for an audit
of any target alike: missing and unexpected keys, a wrapper's prefix, shapes."""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..utils.errors import InputError
from ..utils.files import atomic_write
from ..utils.readers import check_fields, load_torch

log = logging.getLogger(__name__)
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
#: What a checkpoint of ``videocoop train`` holds (the first three always), and the type of each.
CHECKPOINT_FIELDS = {"trainable": dict[str, torch.Tensor], "classnames": list[str], "epoch": int,
                     "selection": dict | None, "per_class": dict, "config": dict, "optimizer": dict, "scheduler": dict,
                     "rng": dict, "world_size": int}
REQUIRED_FIELDS = ("trainable", "classnames", "epoch")
#: The epoch chosen on a selection split (train/selection.py's Selection).
SELECTION_FIELDS = {"split": str, "epoch": int, "select_top1": float, "val_top1": float | None}
#: What a wrapper puts before every key of the state it saves.
WRAPPER_PREFIXES = {"module.": "a DataParallel/DDP wrapper's", "_orig_mod.": "torch.compile's",
                    "model.": "a wrapper module's"}
OURS_ONLY = ("--resume, --eval-only and predict read the checkpoints videocoop train writes only: move this file out "
             "of the run folder, or train into another --output-dir")


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
    """Read a checkpoint written by ``videocoop train`` (tensors and plain data only) and check
    that it is one: :data:`CHECKPOINT_FIELDS`, typed.

    Raises:
        InputError: a missing, damaged or foreign file. Another program's checkpoint (a bare
            state dict, CoOp's ``{"state_dict": ...}``) is named as such, with the keys it
            holds and the prefix its tensors' names carry.
    """
    if not os.path.isfile(path):
        raise InputError(path, "no such checkpoint")
    state = load_torch(path, "the tensors and plain values videocoop train saves")
    if not isinstance(state, Mapping) or any(k not in state for k in REQUIRED_FIELDS):
        raise InputError(path, f"not a checkpoint of videocoop train: {_foreign(state)}", fix=OURS_ONLY)
    check_fields(state, CHECKPOINT_FIELDS, path, fix=OURS_ONLY)
    check_fields(state.get("selection") or {}, SELECTION_FIELDS, path, prefix="selection.", fix=OURS_ONLY)
    for key, tensor in state["trainable"].items():  # a run never saves these (a NaN loss stops it first)
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            what = f"a {tensor.dtype} tensor" if not tensor.is_floating_point() else "NaN or inf"
            raise InputError(path, f"holds {what} where the learned tensor is a finite float tensor",
                             at=f'key "trainable.{key}"', fix="the file is damaged: resume from another copy, or "
                                                              "pass --overwrite to train anew")
    return dict(state)


def _foreign(state) -> str:
    """What another program's checkpoint holds, in words."""
    if not isinstance(state, Mapping):
        return f"it holds a {type(state).__name__} where videocoop's hold a dict of {', '.join(CHECKPOINT_FIELDS)}"
    keys = sorted(map(str, state))
    said = (f"it holds the keys {', '.join(repr(k) for k in keys[:8])}{' ...' if len(keys) > 8 else ''} where "
            f"videocoop's hold {', '.join(repr(k) for k in CHECKPOINT_FIELDS)}")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and len(tensors) == len(state):
        return f"it is a bare state dict of {len(tensors)} tensors{_prefix_words(tensors)}"
    for key, value in state.items():
        if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return f"{said}; its tensors (under {key!r}){_prefix_words(value) or ' are named ' + repr(sorted(value)[:3])}"
    return said


def _prefix_words(keys: Sequence[str] | Mapping) -> str:
    prefix = next((p for p in WRAPPER_PREFIXES if keys and all(str(k).startswith(p) for k in keys)), None)
    return f" carry the prefix {prefix!r} ({WRAPPER_PREFIXES[prefix]})" if prefix else ""


@dataclass
class StateDiff:
    """How a state dict's tensors differ from a model's (:func:`diff_state`); false when they fit."""

    missing: list[str] = field(default_factory=list)  # the model's keys the state lacks
    unexpected: list[str] = field(default_factory=list)  # the state's keys the model lacks
    shapes: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # (key, state's, model's)
    prefix: str | None = None  # the state's keys are the model's with this wrapper's prefix (or without it)
    prefix_on: str = "state"  # which side carries it: "state" (saved from a wrapper) or "model" (a wrapped model)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        """The differences in words, the likely cause first."""
        parts = []
        if self.prefix:
            how = (f"the state's keys carry the prefix {self.prefix!r} ({WRAPPER_PREFIXES[self.prefix]}) that the model's "
                   f"do not: save the unwrapped model's state, or strip the prefix" if self.prefix_on == "state" else
                   f"the model's keys carry the prefix {self.prefix!r} ({WRAPPER_PREFIXES[self.prefix]}) that the "
                   f"state's do not: load into the unwrapped model")
            parts.append(how)
        for what, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                parts.append(f"{what} {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
        parts += [f"{k} has shape {a} where the model's is {b}" for k, a, b in self.shapes]
        return "; ".join(parts)


def diff_state(state: Mapping[str, object], expected: Mapping[str, object]) -> StateDiff:
    """Compare a state dict's keys and shapes with those a model expects (e.g. its
    ``trainable_state_dict()``): what a strict load would refuse, and why where it can tell
    (every key off by a wrapper's prefix: ``module.``, ``_orig_mod.``, ``model.``)."""
    found, wanted = set(map(str, state)), set(map(str, expected))
    diff = StateDiff(sorted(wanted - found), sorted(found - wanted))
    for k in sorted(found & wanted):
        a, b = getattr(state[k], "shape", None), getattr(expected[k], "shape", None)
        if a is not None and b is not None and tuple(a) != tuple(b):
            diff.shapes.append((k, list(a), list(b)))
    for prefix in WRAPPER_PREFIXES:
        if diff.unexpected and all(k.startswith(prefix) and k[len(prefix):] in wanted for k in diff.unexpected):
            diff.prefix, diff.prefix_on = prefix, "state"
        elif diff.missing and all(k.startswith(prefix) and k[len(prefix):] in found for k in diff.missing):
            diff.prefix, diff.prefix_on = prefix, "model"
    return diff


def check_checkpoint(state: Mapping, path: str | os.PathLike, *, classnames: Sequence[str] | None = None,
                     trainable: Mapping[str, torch.Tensor] | None = None) -> None:
    """Refuse a checkpoint of another class list or another model than this run's.

    Args:
        state: from :func:`load_checkpoint`.
        path: its file, for the message.
        classnames: the run's classes, in label order.
        trainable: the run's model's ``trainable_state_dict()``.

    Raises:
        InputError: naming what differs: the classes (missing, extra, or the same in another
            order), the tensors (:func:`diff_state`).
    """
    if classnames is not None and list(state["classnames"]) != list(classnames):
        raise InputError(path, f"it was trained on {len(state['classnames'])} classes {_class_diff(state['classnames'], classnames)}",
                         fix="point --output-dir (or --run) at the run of these classes, or train them anew")
    if trainable is not None and (diff := diff_state(state["trainable"], trainable)):
        other = None if diff.prefix else ("the checkpoint is another model's (n_ctx, csc, temporal-agg or CLIP "
                                          "differ): point --output-dir at its own run, or train this one anew")
        raise InputError(path, f"its learned tensors do not fit this run's model: {diff.describe()}", fix=other)


def restore_trainable(model, state: Mapping, path: str | os.PathLike, *,
                      classnames: Sequence[str] | None = None) -> None:
    """Load a checkpoint's learned tensors into ``model`` (a
    :class:`~videocoop.model.VideoFeatureCLIP`) once :func:`check_checkpoint` has refused
    another class list or model, naming what differs: the one way ``--resume``,
    ``--eval-only`` and ``predict`` restore a checkpoint."""
    check_checkpoint(state, path, classnames=classnames, trainable=model.trainable_state_dict())
    model.load_trainable_state_dict(state["trainable"])


def _class_diff(old: Sequence[str], new: Sequence[str]) -> str:
    extra, absent = [c for c in old if c not in new], [c for c in new if c not in old]
    if extra or absent:
        return (f"{list(old)[:10]}; the data has {len(new)}" + (f", without {extra[:5]}" if extra else "")
                + (f", with {absent[:5]} besides" if absent else ""))
    i = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    return f"in another order: its label {i} is {old[i]!r}, the data's is {new[i]!r}"


__all__ = ["CHECKPOINT_BEST", "CHECKPOINT_FIELDS", "CHECKPOINT_LAST", "StateDiff", "WRAPPER_PREFIXES", "check_checkpoint",
           "diff_state", "load_checkpoint", "restore_trainable", "rng_state", "save_checkpoint", "set_rng_state"]
