"""Pre-extracted frame features on disk: the dataset, its items and its ``features.json``.

Layout::

    root/
      features.json          which CLIP made the features (optional, but checked when present)
      classnames.txt         class order, one per line (optional; else sorted folder names)
      <class>/<video>.pt     a [T, D] tensor, or a dict with key "features"
      <class>/<video>.npy    a [T, D] array

A manifest CSV with a ``path,label`` header is the other way in: one row per video,
``path`` relative to ``root`` (or to the manifest's folder when ``root`` is None),
``label`` a class name.

Every file is read and checked when the dataset is built, so a bad file stops the run
before the first step, with its path in the message.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.errors import InputError, VideoCoopError
from ..utils.files import write_json
from ..utils.readers import load_array, load_torch, read_json_object, read_lines
from .layout import CLASSNAMES_FILE, FEATURE_SUFFIXES, INFO_FILE, VIDEO_SUFFIXES
from .manifest import read_manifest
from .samples import VideoSample
from .sampling import MIDDLE, frame_offsets, segment_frames

INFO_KEYS = ("clip_model", "weights", "num_frames", "dim")
#: The types of ``features.json``'s keys (others are kept as they are), and what each says.
INFO_FIELDS = {"clip_model": str, "weights": str, "num_frames": int | None, "dim": int, "sampling": dict,
               "source": str, "source_root": str, "precision": str, "preprocess": dict}
INFO_NOTES = {
    "clip_model": "the open_clip model name that made the features, e.g. ViT-B-32",
    "weights": "the open_clip pretrained tag, random:<seed> or sha256:<checkpoint hash>",
    "num_frames": "frames per video, or null when sampled by fps",
    "dim": "the width of each frame's feature, e.g. 512",
}
#: What a valid feature file holds, by suffix (said when one cannot be read).
VALID_FEATURE_FILE = {
    ".npy": "one numeric [T, D] array written by numpy.save",
    ".pt": "a [T, D] tensor or numeric array, or a dict with key 'features' holding one, written by torch.save",
}
# What torch.save of a numeric numpy array pickles (numpy 1 and 2 name the reconstructor
# differently; numpy 2 adds a class per dtype): allowed under weights_only, which still
# refuses any other class.
_NUMPY_GLOBALS = [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype,
                  *{type(np.dtype(c)) for c in np.typecodes["AllInteger"] + np.typecodes["Float"]}]


class MissingValidationClassWarning(UserWarning):
    """A training class has no videos in the validation folder: its accuracy is not measured."""


# --------------------------------------------------------------------------- features.json


def read_feature_info(root: str | os.PathLike) -> dict | None:
    """The ``features.json`` of a feature folder, or None when it has none.

    Raises:
        InputError: the file exists but is not a JSON object, lacks one of :data:`INFO_KEYS`,
            or a key holds a value of another type than :data:`INFO_FIELDS` says (naming the
            key, the value and the type).
    """
    path = Path(root) / INFO_FILE
    if not path.exists():
        return None
    info = read_json_object(path, "videocoop extract and synth write it; fix the key or re-extract the features",
                            fields=INFO_FIELDS, required=INFO_KEYS, notes=INFO_NOTES)
    if "dim" in info and info["dim"] < 1:
        raise InputError(path, f"found {info['dim']}, expected an integer >= 1 ({INFO_NOTES['dim']})", at='key "dim"')
    return info


def write_feature_info(root: str | os.PathLike, info: Mapping) -> Path:
    """Write ``features.json`` into ``root``; ``info`` must hold at least :data:`INFO_KEYS`."""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise VideoCoopError(f"features.json needs keys {', '.join(INFO_KEYS)}; missing {', '.join(missing)}")
    path = Path(root) / INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, dict(info))


def check_feature_info(info: Mapping, clip_model: str, weights: str, dim: int, *, where: str = "features.json") -> None:
    """Refuse features made by another CLIP than the one about to be trained.

    Features of one tower scored against another tower's text features of the same width
    train silently into garbage, so the model name and the weights must both match.

    Raises:
        VideoCoopError: naming both sides of every mismatch.
    """
    wanted = {"clip_model": clip_model, "weights": weights, "dim": dim}
    diffs = [f"{k}: {info.get(k)!r} in {where}, {v!r} chosen" for k, v in wanted.items() if k in info and info[k] != v]
    if diffs:
        raise VideoCoopError(
            "the features were made by another CLIP than the one chosen: " + "; ".join(diffs)
            + ". Pass the matching --clip-model/--pretrained/--clip-checkpoint, or re-extract the features."
        )


# --------------------------------------------------------------------------- files


def load_feature_file(path: str | os.PathLike, dim: int | None = None) -> torch.Tensor:
    """Read one video's features as a float32 ``[T, D]`` tensor, checking everything.

    Raises:
        VideoCoopError: unreadable or corrupt file, not a ``[T, D]`` array, ``D != dim``,
            no frames, or NaN/inf values; the message names the file.
    """
    path = Path(path)
    holds = VALID_FEATURE_FILE.get(path.suffix, VALID_FEATURE_FILE[".pt"])
    if path.suffix == ".npy":
        data = load_array(path, holds, finite=False)  # the finite check below covers both kinds
    else:
        data = load_torch(path, holds, allowed=_NUMPY_GLOBALS)
    if isinstance(data, Mapping):
        if "features" not in data:
            raise InputError(path, f"holds a dict without key 'features' (keys: {sorted(map(str, data))}); a valid "
                                   f"feature file holds {holds}")
        data = data["features"]
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "iuf":
            raise InputError(path, f"holds a {data.dtype} array, not real numbers; a valid feature file holds {holds}")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise InputError(path, f"holds a {type(data).__name__}, not a [T, D] tensor or array")
    if data.is_complex() or data.dtype == torch.bool:
        raise InputError(path, f"holds a {data.dtype} tensor, not real numbers; a valid feature file holds {holds}")
    if data.dim() != 2 or data.shape[0] == 0:
        raise InputError(path, f"has shape {list(data.shape)}; expected [T, D] with T >= 1")
    if dim is not None and data.shape[1] != dim:
        raise InputError(path, f"has dim {data.shape[1]}; the chosen CLIP embeds in {dim}")
    data = data.float()
    if not torch.isfinite(data).all():
        raise InputError(path, "contains NaN or inf values (or numbers beyond float32's range)")
    return data


# --------------------------------------------------------------------------- dataset


class FeatureDataset(Dataset):
    """Videos as pre-extracted frame features, with labels from their class folders.

    Args:
        root: the feature folder (see the module docstring for the layout).
        classnames: the class list to label with (training's list, for validation). A
            class folder outside it is an error; a listed class without videos is a
            warning. None: ``root/classnames.txt``, else sorted folder names.
        num_frames: sample this many frames per video (uniformly; random offsets when
            ``train``). None keeps every frame; :func:`collate_samples` pads and masks.
        train: random frame offsets (training) or the segment middles (evaluation).
        manifest: a CSV file with a ``path,label`` header, instead of class folders.
        dim: the chosen CLIP's embedding width; every file must match it.
        cache: keep the features in memory after the up-front check (else re-read them).
        seed: with :meth:`set_epoch`, fixes training's frame positions
            (:func:`frame_offsets`): the same for a video wherever it is read.

    Raises:
        VideoCoopError: no feature files, an empty class folder, a bad file (see
            :func:`load_feature_file`), files of different widths, a class unknown to
            ``classnames``.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        classnames: Sequence[str] | None = None,
        num_frames: int | None = None,
        train: bool = False,
        manifest: str | os.PathLike | None = None,
        *,
        dim: int | None = None,
        cache: bool = True,
        seed: int = 0,
    ):
        if root is None and manifest is None:
            raise VideoCoopError("FeatureDataset needs a feature folder (root) or a manifest CSV")
        if num_frames is not None and num_frames < 1:
            raise VideoCoopError(f"num_frames must be >= 1 or None, got {num_frames}")
        self.root = Path(root) if root is not None else Path(manifest).parent
        if not self.root.is_dir():
            raise VideoCoopError(f"feature folder {self.root} does not exist")
        self.num_frames = num_frames
        self.train = train
        self.seed, self.epoch = seed, 0
        self.info = read_feature_info(self.root)
        if manifest is not None:
            names, files = self._scan_manifest(Path(manifest), classnames)
        else:
            names, files = self._scan_folders(classnames)
        self.classnames = names
        self.files = files  # [(path, label)]
        tensors = []
        clip_dim = dim
        for path, _ in files:  # read everything now: nothing half-loaded is trained on
            x = load_feature_file(path, clip_dim)
            if dim is None:
                dim = x.shape[1]
                first = path
            elif x.shape[1] != dim:  # widths differ between files and no CLIP width was given
                raise InputError(path, f"has dim {x.shape[1]}, but {first} has {dim}")
            tensors.append(x)
        self.dim = dim
        self.lengths = [t.shape[0] for t in tensors]
        self._cache = tensors if cache else None

    def _class_order(self, classnames: Sequence[str] | None, found: Sequence[str], source: str) -> list[str]:
        if classnames is not None:
            classnames = list(classnames)
            unknown = sorted(set(found) - set(classnames))
            if unknown:
                raise VideoCoopError(
                    f"{source} has classes unknown to training: {unknown}; training classes are {classnames}"
                )
            absent = [c for c in classnames if c not in set(found)]
            if absent:
                warnings.warn(
                    f"{source} has no videos of training classes {absent}; their accuracy is not measured",
                    MissingValidationClassWarning,
                    stacklevel=3,
                )
            return classnames
        listed = self.root / CLASSNAMES_FILE
        if listed.is_file():
            names = read_lines(listed, comments=False)
            repeated = sorted({c for c in names if names.count(c) > 1})
            if repeated:
                raise VideoCoopError(f"{listed} lists classes more than once: {repeated}")
            unknown = sorted(set(found) - set(names))
            if unknown:
                raise VideoCoopError(f"{source} has classes {unknown} that {listed} does not list")
            return names
        return sorted(found)

    def _scan_folders(self, classnames):
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        # hidden files (macOS's ._x.pt resource forks) are not features
        per_class = {p.name: sorted(f for f in p.iterdir() if f.suffix in FEATURE_SUFFIXES and f.is_file()
                                    and not f.name.startswith(".")) for p in folders}
        if not any(per_class.values()):
            videos = _count_videos(self.root)
            if videos:
                raise VideoCoopError(
                    f"{self.root} holds videos ({videos} files such as .mp4/.avi), not frame features; extract them "
                    f"first: videocoop extract --videos {self.root} --out FEATURES, then pass --feature-dir FEATURES"
                )
            raise VideoCoopError(
                f"no feature files ({'|'.join(FEATURE_SUFFIXES)}) in {self.root}; expected {self.root}/<class>/<video>.pt"
            )
        empty = [name for name, files in per_class.items() if not files]
        if empty:
            raise VideoCoopError(f"empty class folder(s) in {self.root}: {empty} (no {'|'.join(FEATURE_SUFFIXES)} files)")
        names = self._class_order(classnames, list(per_class), f"feature folder {self.root}")
        if classnames is None:
            unlisted = [c for c in names if c not in per_class]
            if unlisted:
                raise VideoCoopError(f"{self.root / CLASSNAMES_FILE} lists classes with no folder in {self.root}: {unlisted}")
        index = {c: i for i, c in enumerate(names)}
        files = [(f, index[c]) for c in names if c in per_class for f in per_class[c]]
        return names, files

    def _scan_manifest(self, manifest: Path, classnames):
        rows = read_manifest(manifest)
        labels = [r["label"] for r in rows]
        names = self._class_order(classnames, sorted(set(labels)), f"manifest {manifest}")
        index = {c: i for i, c in enumerate(names)}
        files = []
        for row, label in zip(rows, labels):
            path = self.root / row["path"]
            if not path.is_file():
                raise VideoCoopError(f"manifest {manifest} names {path}, which does not exist")
            files.append((path, index[label]))
        return names, files

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.files]

    def set_epoch(self, epoch: int) -> None:
        """Training's frame positions for ``epoch`` (call before the epoch's loader starts)."""
        self.epoch = epoch

    @property
    def video_ids(self) -> list[str]:
        """Each video's id (its file name without the suffix), as ``meta["video_id"]`` says."""
        return [path.stem for path, _ in self.files]

    def subset(self, indices: Sequence[int], classnames: Sequence[str] | None = None) -> FeatureDataset:
        """A copy holding only the videos ``indices`` (in that order), relabelled over
        ``classnames`` when given (every kept video's class must be in it); frame sampling,
        the cache and everything else are shared. The few-shot draw and the base/novel
        class split (:mod:`videocoop.data.protocols`) are made with it."""
        out = copy.copy(self)
        out.classnames, labels = relabel(self.classnames, [self.files[i][1] for i in indices], classnames)
        out.files = [(self.files[i][0], label) for i, label in zip(indices, labels)]
        out.lengths = [self.lengths[i] for i in indices]
        out._cache = None if self._cache is None else [self._cache[i] for i in indices]
        return out

    def __getitem__(self, i: int) -> VideoSample:
        path, label = self.files[i]
        x = self._cache[i] if self._cache is not None else load_feature_file(path, self.dim)  # [T, D]
        length = x.shape[0]
        if self.num_frames is not None:
            offsets = frame_offsets(self.seed, self.epoch, [i], self.num_frames) if self.train else MIDDLE
            x = x[torch.from_numpy(segment_frames([length], self.num_frames, offsets)[0])]  # [num_frames, D]
        return VideoSample(x, label, {"video_id": path.stem, "path": str(path), "num_frames": length})


def relabel(old: Sequence[str], labels: Sequence[int], classnames: Sequence[str] | None) -> tuple[list[str], list[int]]:
    """``labels`` (indices into the class list ``old``) as indices into ``classnames``
    (``old`` itself when None): the class list and labels of a dataset's subset."""
    if classnames is None:
        return list(old), list(labels)
    index = {c: i for i, c in enumerate(classnames)}
    outside = sorted({old[y] for y in labels} - set(index))
    if outside:
        raise VideoCoopError(f"videos of classes {outside} kept in a subset over classes {list(classnames)}")
    return list(classnames), [index[old[y]] for y in labels]


def _count_videos(root: Path, limit: int = 10_000) -> int:
    """Video files under ``root`` (any depth), counted up to ``limit``."""
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if Path(f).suffix.lower() in VIDEO_SUFFIXES)
        if n >= limit:
            break
    return n


__all__ = [
    "INFO_FIELDS", "FeatureDataset", "MissingValidationClassWarning", "check_feature_info", "load_feature_file",
    "read_feature_info", "relabel", "write_feature_info",
]
