"""Packed feature splits: one memory-mapped array per split plus an index.

Per-file loading opens, parses and checks one small file per video: a few thousand
videos a second, which cannot feed a training step of a few milliseconds. ``pack``
writes a split once as::

    dst/
      packed.json      the index: format, dtype, dim, class names, video ids and paths
      features.npy     every video's frames, one after another: [sum T, D]
      offsets.npy      where each video starts: [N + 1] int64
      labels.npy       class index per video: [N] int64
      features.json    copied from the source (which CLIP made the features)
      classnames.txt   the class order, one per line (as in a feature folder)

and :class:`PackedFeatureDataset` reads it through ``np.load(mmap_mode="r")`` with the
interface of :class:`~videocoop.data.features.FeatureDataset`: the same ``VideoSample`` items and
the same frame sampling (:func:`~videocoop.data.frame_offsets`), plus a batched fetch
(``__getitems__``) that gathers a whole batch's frames with one indexing operation.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.errors import InputError, VideoCoopError
from ..utils.readers import load_array, read_json_object
from .features import FeatureDataset, MissingValidationClassWarning, read_feature_info, relabel, write_feature_info
from .layout import CLASSNAMES_FILE
from .samples import VideoSample
from .sampling import MIDDLE, frame_offsets, segment_frames

INDEX_FILE = "packed.json"
FORMAT = "videocoop-packed"
VERSION = 1
DTYPES = ("float16", "float32")
#: The types of the index's keys (:func:`pack` writes them all).
INDEX_FIELDS = {"format": str, "version": int, "dtype": str, "dim": int, "videos": int, "frames": int,
                "classnames": list[str], "video_ids": list[str], "paths": list[str], "source": str}


def is_packed(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a packed split (its index file)."""
    return (Path(root) / INDEX_FILE).is_file()


def open_feature_dataset(root: str | os.PathLike, classnames: Sequence[str] | None = None,
                         num_frames: int | None = None, train: bool = False, *, dim: int | None = None, seed: int = 0):
    """A packed split's :class:`PackedFeatureDataset`, else a per-file :class:`~videocoop.data.features.FeatureDataset`."""
    cls = PackedFeatureDataset if is_packed(root) else FeatureDataset
    return cls(root, classnames=classnames, num_frames=num_frames, train=train, dim=dim, seed=seed)


def pack(src: str | os.PathLike, dst: str | os.PathLike, *, classnames: Sequence[str] | None = None,
         manifest: str | os.PathLike | None = None, dtype: str = "float16", overwrite: bool = False) -> dict:
    """Pack one split of per-video feature files into ``dst`` (see the module docstring).

    Every source file is read and checked by :class:`~videocoop.data.features.FeatureDataset`
    first, so a bad file stops the packing with its path in the message. The split is
    written into a temporary folder beside ``dst`` and renamed into place when complete:
    a pack that stops half-way leaves ``dst`` as it was, and nothing of an old split
    (its ``features.json``, say) survives into the new one.

    Args:
        src: a feature folder (``<class>/<video>.pt|.npy``) or, with ``manifest``, its root.
        dst: the output folder: new, empty, or (with ``overwrite``) a packed split to replace.
        classnames: the class order (e.g. training's, for a validation split).
        manifest: a ``path,label`` CSV instead of class folders.
        dtype: ``float16`` (half the bytes; CLIP features are made in half precision on
            the GPU anyway) or ``float32`` (the source values exactly).
        overwrite: replace a packed split already in ``dst``.

    Returns:
        the index written to ``dst/packed.json``.

    Raises:
        VideoCoopError: a bad source file; ``dst`` holds a packed split (without
            ``overwrite``) or anything else.
    """
    if dtype not in DTYPES:
        raise VideoCoopError(f"unknown packed dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    dst = Path(dst)
    if dst.exists():
        if not dst.is_dir() or (any(dst.iterdir()) and not is_packed(dst)):
            raise VideoCoopError(f"{dst} exists and is not a packed split: pack into a new or empty folder")
        if is_packed(dst) and not overwrite:
            raise VideoCoopError(f"{dst} holds a packed split already: pass --overwrite to replace it, or choose another DST")
    dataset = FeatureDataset(src, classnames=classnames, manifest=manifest, cache=False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.packing")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed pack of this pid
    tmp.mkdir()
    try:
        index = _write_split(tmp, dataset, src, dtype)
        _swap_into_place(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return index


def _write_split(out: Path, dataset: FeatureDataset, src: str | os.PathLike, dtype: str) -> dict:
    """Write ``dataset`` as a packed split into the (new, empty) folder ``out``."""
    offsets = np.zeros(len(dataset) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(dataset.lengths)
    array = np.lib.format.open_memmap(out / "features.npy", mode="w+", dtype=dtype,
                                      shape=(int(offsets[-1]), dataset.dim))  # [sum T, D]
    for i in range(len(dataset)):
        with np.errstate(over="ignore"):  # float16 overflows to inf above 65504: refused below, by name
            rows = dataset[i].features.numpy().astype(dtype)  # [T, D], every frame: num_frames is None
        if not np.isfinite(rows).all():
            raise VideoCoopError(f"feature file {dataset.files[i][0]} has values beyond {dtype}'s range; pack with --dtype float32")
        array[offsets[i]:offsets[i + 1]] = rows
    array.flush()
    del array
    np.save(out / "offsets.npy", offsets)
    np.save(out / "labels.npy", np.asarray(dataset.labels, dtype=np.int64))
    index = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": dtype,
        "dim": dataset.dim,
        "videos": len(dataset),
        "frames": int(offsets[-1]),
        "classnames": list(dataset.classnames),
        "video_ids": [Path(p).stem for p, _ in dataset.files],
        "paths": [str(p) for p, _ in dataset.files],
        "source": str(Path(src).resolve()),
    }
    (out / CLASSNAMES_FILE).write_text("".join(f"{c}\n" for c in dataset.classnames))
    if dataset.info is not None:
        write_feature_info(out, dataset.info)
    (out / INDEX_FILE).write_text(json.dumps(index) + "\n")  # last: a split is readable once its index exists
    return index


def _swap_into_place(tmp: Path, dst: Path) -> None:
    """Rename the finished split ``tmp`` to ``dst``. A folder cannot be renamed over a
    non-empty one, so an old split is first renamed aside and deleted only after the new
    one is in place; a crash in between leaves both folders whole."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.{os.getpid()}.replaced")
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old)


def _load_array(path: Path, ndim: int, mmap_mode: str | None = None, kinds: str = "iu") -> np.ndarray:
    """One of a packed split's arrays, checked for its kind of numbers and dimensions (and the
    frames, read in chunks through the map, for NaN or inf: a damaged split is named when it is
    opened, not found as a NaN loss later).

    Raises:
        InputError: a missing, truncated, foreign or non-finite file, named.
    """
    if not path.is_file():
        raise InputError(path, "missing from the packed split", fix="re-pack the split")
    what = "frames [sum T, D] of floats" if kinds == "f" else f"a {ndim}-d integer array"
    return load_array(path, what, ndim=ndim, kinds=kinds, mmap_mode=mmap_mode, fix="re-pack the split")


def _check_index(root: Path, index: dict, array: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
    """The index and the arrays must describe the same videos.

    Raises:
        VideoCoopError: naming the files that disagree (which of them is damaged cannot be told).
    """
    n = len(index["video_ids"])
    problems = []
    if not np.issubdtype(offsets.dtype, np.integer) or len(offsets) != n + 1 or offsets[0] != 0 \
            or (np.diff(offsets) < 1).any() or offsets[-1] != len(array):
        problems.append(f"{root / 'offsets.npy'} must rise from 0 to the {len(array)} frames of {root / 'features.npy'} "
                        f"in {n + 1} steps")
    if not np.issubdtype(labels.dtype, np.integer) or len(labels) != n \
            or (n and (labels.min() < 0 or labels.max() >= len(index["classnames"]))):
        problems.append(f"{root / 'labels.npy'} must hold {n} class indices below the {len(index['classnames'])} "
                        f"classes {root / INDEX_FILE} lists")
    if len(index["paths"]) != n:
        problems.append(f"{root / INDEX_FILE} lists {len(index['paths'])} paths for {n} videos")
    if problems:
        raise VideoCoopError(f"packed split {root} is inconsistent: {'; '.join(problems)}; re-pack the split")


class PackedFeatureDataset(Dataset):
    """A packed split, read through a memory map, with :class:`~videocoop.data.features.FeatureDataset`'s interface.

    Args:
        root: a folder written by :func:`pack`.
        classnames: label with this class order (training's, for validation); the
            split's classes must all be in it.
        num_frames: sample this many frames per video (as ``FeatureDataset``); None
            keeps every frame.
        train: random frame offsets (training) or segment middles (evaluation).
        dim: the chosen CLIP's embedding width; the split must match it.
        seed: with :meth:`set_epoch`, fixes training's frame positions, as ``FeatureDataset``.

    Items are ``VideoSample(features [T, D] float32, label, meta)`` with ``meta``
    ``video_id``, ``path`` (the source file), ``num_frames``.
    """

    def __init__(self, root: str | os.PathLike, classnames: Sequence[str] | None = None,
                 num_frames: int | None = None, train: bool = False, *, dim: int | None = None, seed: int = 0):
        self.root = Path(root)
        if not is_packed(self.root):
            raise VideoCoopError(f"{self.root} is not a packed split (no {INDEX_FILE}); make one with `videocoop pack SRC DST`")
        index = read_json_object(self.root / INDEX_FILE, "re-pack the split", fields=INDEX_FIELDS,
                                 required=("classnames", "video_ids", "paths"))
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise VideoCoopError(
                f"{self.root / INDEX_FILE} is format {index.get('format')!r} v{index.get('version')}; "
                f"this videocoop reads {FORMAT!r} v{VERSION}: re-pack the split"
            )
        if num_frames is not None and num_frames < 1:
            raise VideoCoopError(f"num_frames must be >= 1 or None, got {num_frames}")
        self._array = _load_array(self.root / "features.npy", 2, mmap_mode="r", kinds="f")  # [sum T, D], mapped
        if str(self._array.dtype) != index.get("dtype", str(self._array.dtype)):
            raise InputError(self.root / "features.npy", f"holds {self._array.dtype} frames where {INDEX_FILE} says "
                                                         f"{index['dtype']}", fix="re-pack the split")
        self._offsets = _load_array(self.root / "offsets.npy", 1)  # [N + 1]
        labels = _load_array(self.root / "labels.npy", 1)  # [N]
        _check_index(self.root, index, self._array, self._offsets, labels)
        self.dim = int(self._array.shape[1])
        if dim is not None and dim != self.dim:
            raise VideoCoopError(f"packed split {self.root} has dim {self.dim}; the chosen CLIP embeds in {dim}")
        stored = index["classnames"]
        if classnames is not None:
            classnames = list(classnames)
            unknown = sorted(set(stored[i] for i in np.unique(labels)) - set(classnames))
            if unknown:
                raise VideoCoopError(f"packed split {self.root} has classes unknown to training: {unknown}; training classes are {classnames}")
            absent = [c for c in classnames if c not in set(stored[i] for i in np.unique(labels))]
            if absent:
                warnings.warn(f"packed split {self.root} has no videos of training classes {absent}; their accuracy is not measured",
                              MissingValidationClassWarning, stacklevel=2)
            remap = np.array([classnames.index(c) if c in classnames else -1 for c in stored], dtype=np.int64)
            labels = remap[labels]
            self.classnames = classnames
        else:
            self.classnames = stored
        self._labels = labels.tolist()
        self._starts = self._offsets[:-1].tolist()
        self.lengths = np.diff(self._offsets).tolist()
        self._ids = index["video_ids"]
        self._paths = index["paths"]
        self.files = [(Path(p), label) for p, label in zip(self._paths, self._labels)]
        self.num_frames = num_frames
        self.train = train
        self.seed, self.epoch = seed, 0
        self.info = read_feature_info(self.root)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> list[int]:
        return list(self._labels)

    @property
    def video_ids(self) -> list[str]:
        """Each video's id (its source file's name without the suffix)."""
        return list(self._ids)

    def subset(self, indices: Sequence[int], classnames: Sequence[str] | None = None) -> PackedFeatureDataset:
        """A copy holding only the videos ``indices`` (in that order), relabelled over
        ``classnames`` when given, reading the same memory map
        (:meth:`~videocoop.data.features.FeatureDataset.subset`)."""
        out = copy.copy(self)
        out.classnames, out._labels = relabel(self.classnames, [self._labels[i] for i in indices], classnames)
        out._starts = [self._starts[i] for i in indices]
        out.lengths = [self.lengths[i] for i in indices]
        out._ids = [self._ids[i] for i in indices]
        out._paths = [self._paths[i] for i in indices]
        out.files = [(Path(p), label) for p, label in zip(out._paths, out._labels)]
        return out

    def _meta(self, i: int) -> dict:
        return {"video_id": self._ids[i], "path": self._paths[i], "num_frames": self.lengths[i]}

    def set_epoch(self, epoch: int) -> None:
        """Training's frame positions for ``epoch`` (call before the epoch's loader starts)."""
        self.epoch = epoch

    def _frames(self, indices: Sequence[int]) -> np.ndarray:
        """Rows of the map to read: ``[B, num_frames]``, the same positions as ``FeatureDataset``."""
        offsets = frame_offsets(self.seed, self.epoch, indices, self.num_frames) if self.train else MIDDLE
        # int64 even for no indices (a process's empty share of a small last global batch):
        # np.array([]) is float64, which no array can be indexed with
        starts = np.array([self._starts[i] for i in indices], dtype=np.int64)  # [B]
        return starts[:, None] + segment_frames([self.lengths[i] for i in indices], self.num_frames, offsets)

    def __getitem__(self, i: int) -> VideoSample:
        start, length = self._starts[i], self.lengths[i]
        if self.num_frames is None:
            rows = self._array[start:start + length]  # [T, D]
        else:
            rows = self._array[self._frames([i])[0]]  # [num_frames, D]
        return VideoSample(torch.from_numpy(np.array(rows)).float(), self._labels[i], self._meta(i))

    def __getitems__(self, indices: Sequence[int]) -> list[VideoSample]:
        """A DataLoader batch: every item's frames gathered in one indexing operation (a Python
        call per video was half of the packed loader's time); the same frames as
        ``__getitem__`` on each index."""
        if self.num_frames is None:
            return [self[i] for i in indices]
        rows = self._frames(indices).ravel()  # [B * F]
        frames = torch.from_numpy(self._array[rows]).float()  # [B * F, D]; torch converts fp16 fastest
        frames = frames.view(len(indices), self.num_frames, self.dim)  # [B, F, D]
        return [VideoSample(frames[b], self._labels[i], self._meta(i)) for b, i in enumerate(indices)]
