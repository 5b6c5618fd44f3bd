"""The protocols papers report, as data: the few-shot draw and the base/novel class split.

* Few-shot (CoOp, ViFi-CLIP, X-CLIP): ``shots`` training videos per class, drawn by a
  seed. :func:`draw_shots` ranks each class's videos by ``sha256(seed, class, video id)``
  and keeps the first ``shots``: a pure function of the split's (class, video id) pairs,
  the number of shots and the seed. No library RNG is involved (numpy's and torch's
  algorithms are not promised stable across releases), so the draw is the same on every
  machine, in every process, under any global RNG state and any file-listing order; and
  the draws are nested (a seed's 2 shots are among its 4 shots), so a curve over shots
  compares like with like.
* Base-to-novel (CoCoOp): train on the base classes only; report base accuracy (base
  videos among base classes), novel accuracy (novel videos among novel classes, prompted
  with the learned context) and their harmonic mean. ``half`` is CoCoOp's split: the
  first ``ceil(n / 2)`` classes in label order (``math.ceil`` in ``subsample_classes`` of
  KaiyangZhou/CoOp's datasets), so UCF101 is 51 base + 50 novel.

Nothing here imports torch: the draw runs in a bare ``python -c`` in a tenth of a second.
Datasets are used through their ``classnames``, ``labels``, ``video_ids``, ``files`` and
``subset`` (:class:`~videocoop.data.features.FeatureDataset`, :class:`~videocoop.data.packed.PackedFeatureDataset`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.errors import InputError, VideoCoopError
from ..utils.files import write_json
from ..utils.readers import read_json_object, read_lines

log = logging.getLogger(__name__)

SHOTS_FILE = "shots.json"  # the drawn videos, per class, in the run folder
CLASSES_FILE = "classes.json"  # the base and novel classes, in the run folder
HALF_SPLIT = "half"  # --base-classes half: CoCoOp's split, the first ceil(n / 2) classes are base
#: Written into shots.json so a reader can redo the draw by hand.
DRAW_RULE = "per class, the `shots` videos with the smallest sha256('<split_seed>/<class>/<video id>') (hex), ties by path"


def shot_key(seed: int, classname: str, video_id: str) -> str:
    """A video's place in its class's draw for ``seed``: the smaller, the earlier drawn."""
    return hashlib.sha256(f"{seed}/{classname}/{video_id}".encode()).hexdigest()


def draw_shots(classnames: Sequence[str], labels: Sequence[int], video_ids: Sequence[str], shots: int, seed: int,
               paths: Sequence[str] | None = None) -> list[int]:
    """``shots`` videos of every class that has videos, as indices into the split.

    Args:
        classnames: the split's class list (label order).
        labels: each video's class index.
        video_ids: each video's id (file name without suffix).
        shots: videos per class.
        seed: the split seed.
        paths: each video's path; only breaks ties between videos of one class with the
            same id (a manifest may hold such), so any spelling with a common root works.

    Returns:
        Indices grouped by class in label order, each class's in draw order: the same list
        whatever order the split lists its videos in.

    Raises:
        VideoCoopError: ``shots`` < 1, or classes with fewer videos than ``shots`` (all named).
    """
    if shots < 1:
        raise VideoCoopError(f"--shots must be >= 1, got {shots}")
    paths = [""] * len(labels) if paths is None else [str(p) for p in paths]
    per_class: dict[int, list[tuple[str, str, int]]] = {}
    for i, (y, vid, path) in enumerate(zip(labels, video_ids, paths)):
        per_class.setdefault(int(y), []).append((shot_key(seed, classnames[y], vid), path, i))
    short = [f"{classnames[y]} ({len(v)})" for y, v in sorted(per_class.items()) if len(v) < shots]
    if short:
        raise VideoCoopError(f"--shots {shots}: {len(short)} class(es) have fewer than {shots} training videos: "
                             f"{', '.join(short)}; lower --shots or add videos to those classes")
    return [i for y in sorted(per_class) for _, _, i in sorted(per_class[y])[:shots]]


def split_seed_of(cfg) -> int:
    """The seed that draws a run's shots: ``split_seed``, else the run's ``seed`` (CoOp's convention)."""
    return cfg.seed if cfg.split_seed is None else cfg.split_seed


def harmonic_mean(base: float, novel: float) -> float:
    """CoCoOp's H: ``2·b·n / (b + n)``; 0 when both are 0."""
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0


# --------------------------------------------------------------------------- class split


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class names from a file: one per line (blank lines and ``#`` comments skipped), or a
    CSV whose header has a ``name`` column (ViFi-CLIP's ``labels/*_base_labels.csv``).

    Raises:
        InputError: unreadable, not UTF-8 (:func:`~videocoop.utils.readers.read_lines`), or empty.
    """
    lines = read_lines(path)
    if lines and "name" in [c.strip() for c in lines[0].split(",")]:
        names = [(row.get("name") or "").strip() for row in csv.DictReader(io.StringIO("\n".join(lines)),
                                                                             skipinitialspace=True)]
        lines = [n for n in names if n]
    if not lines:
        raise InputError(path, "names no classes (the base class list of --base-classes)",
                         fix="write one class name per line")
    return lines


def split_classes(classnames: Sequence[str], spec: str) -> tuple[list[str], list[str]]:
    """``(base, novel)`` classes, each in label order.

    Args:
        classnames: the training split's class list, in label order.
        spec: ``half`` (CoCoOp: the first ``ceil(n / 2)`` classes are base), or a file of
            base class names (:func:`read_class_list`); a name matches a class exactly or
            with ``_`` read as a space ("ride bike" is ``ride_bike``).

    Raises:
        VideoCoopError: names not among the classes (with the valid ones), a class listed
            twice, or no class left on one side.
    """
    classnames = list(classnames)
    if spec == HALF_SPLIT:
        m = math.ceil(len(classnames) / 2)
        base = classnames[:m]
    else:
        if not os.path.isfile(spec):
            raise VideoCoopError(f"--base-classes {spec!r}: choose {HALF_SPLIT} (CoCoOp's split) or a file of base "
                                 f"class names, one per line; no such file")
        words = {}
        for c in classnames:
            words.setdefault(c.replace("_", " "), []).append(c)
        chosen = []
        unknown = []
        for name in read_class_list(spec):
            match = [name] if name in classnames else words.get(name.replace("_", " "), [])
            if len(match) != 1:
                unknown.append(name)
            else:
                chosen.append(match[0])
        if unknown:
            raise VideoCoopError(f"{spec} names classes not in the training split: {unknown}; its classes are {classnames}")
        repeated = sorted({c for c in chosen if chosen.count(c) > 1})
        if repeated:
            raise VideoCoopError(f"{spec} lists classes more than once: {repeated}")
        base = [c for c in classnames if c in set(chosen)]
    novel = [c for c in classnames if c not in set(base)]
    if not base or not novel:
        raise VideoCoopError(f"--base-classes {spec} leaves {len(base)} base and {len(novel)} novel classes of "
                             f"{len(classnames)}; base-to-novel needs at least one of each")
    return base, novel


# --------------------------------------------------------------------------- datasets


@dataclass
class ProtocolSplit:
    """What training may see under the run's protocol, and what the novel evaluation uses."""

    train_set: object  # the training videos: base classes only, K per class with shots
    val_set: object | None  # validation videos of the training classes, labelled over them
    classnames: list[str]  # the classes training sees (the base classes under base-to-novel)
    all_classnames: list[str]  # the training split's whole class list
    novel: list[str] = field(default_factory=list)  # novel classes (base-to-novel), never trained on
    novel_val_set: object | None = None  # validation videos of the novel classes, labelled over them
    select_set: object | None = None  # the split an epoch is chosen on, cut as val_set is (base classes only)
    shots: dict[str, list[str]] | None = None  # class -> drawn video ids, in draw order

    @property
    def base_to_novel(self) -> bool:
        return bool(self.novel)


def _class_indices(dataset, classes: Sequence[str]) -> list[int]:
    wanted = {dataset.classnames.index(c) for c in classes if c in dataset.classnames}
    return [i for i, y in enumerate(dataset.labels) if y in wanted]


def apply_protocols(cfg, train_set, val_set=None, select_set=None) -> ProtocolSplit:
    """Cut the datasets down to what the run's protocol allows training to see.

    ``cfg`` is a :class:`~videocoop.train.config.TrainConfig` (``shots``, ``split_seed`` or
    ``seed``, ``base_classes``). Under base-to-novel the training set keeps the base
    classes' videos only, relabelled over the base classes, before anything is drawn; the
    validation set splits into base and novel videos, each labelled over its own classes;
    the selection set (``select_feature_dir``) keeps its base classes' videos, as training's.

    Raises:
        VideoCoopError: a bad ``--base-classes``, or a (base) class with too few videos.
    """
    all_names = list(train_set.classnames)
    split = ProtocolSplit(train_set, val_set, all_names, all_names, select_set=select_set)
    if cfg.base_classes:
        base, novel = split_classes(all_names, cfg.base_classes)
        split.classnames, split.novel = base, novel
        split.train_set = train_set.subset(_class_indices(train_set, base), classnames=base)
        if select_set is not None:
            split.select_set = select_set.subset(_class_indices(select_set, base), classnames=base)
            if len(split.select_set) == 0:
                raise VideoCoopError(f"{select_set.root} has no videos of the base classes {base} to choose an epoch on")
        if val_set is not None:
            split.val_set = val_set.subset(_class_indices(val_set, base), classnames=base)
            split.novel_val_set = val_set.subset(_class_indices(val_set, novel), classnames=novel)
            if len(split.novel_val_set) == 0:
                raise VideoCoopError(f"{val_set.root} has no videos of the novel classes {novel}: novel accuracy "
                                     f"cannot be measured")
            if len(split.val_set) == 0:
                raise VideoCoopError(f"{val_set.root} has no videos of the base classes {base}")
    if cfg.shots:
        ts = split.train_set
        indices = draw_shots(ts.classnames, ts.labels, ts.video_ids, cfg.shots, split_seed_of(cfg),
                             [str(p) for p, _ in ts.files])
        split.train_set = ts.subset(indices)
        drawn: dict[str, list[str]] = {}
        for vid, y in zip(split.train_set.video_ids, split.train_set.labels):
            drawn.setdefault(split.classnames[y], []).append(vid)
        split.shots = drawn
    return split


def protocol_record(cfg, split: ProtocolSplit) -> dict[str, dict]:
    """The files that record a run's protocol, by name: ``shots.json`` (the drawn videos)
    and ``classes.json`` (the base and novel classes); none for a plain run."""
    files = {}
    if split.shots is not None:
        files[SHOTS_FILE] = {"shots": cfg.shots, "split_seed": split_seed_of(cfg), "rule": DRAW_RULE,
                             "videos": split.shots}
    if split.base_to_novel:
        rule = (f"{HALF_SPLIT}: the first ceil({len(split.all_classnames)} / 2) = {len(split.classnames)} classes in "
                f"label order (CoCoOp)" if cfg.base_classes == HALF_SPLIT else f"the classes listed in {cfg.base_classes}")
        files[CLASSES_FILE] = {"rule": rule, "base": split.classnames, "novel": split.novel}
    return files


def write_protocol_files(cfg, split: ProtocolSplit, out: Path, resume: bool = False) -> None:
    """Write :func:`protocol_record`'s files into the run folder (atomically).

    A resumed run must train on the videos it started with: a draw that differs from the
    recorded one (the split changed on disk) is refused.

    Raises:
        VideoCoopError: ``resume`` and the recorded draw or classes differ from this one.
    """
    for name, record in protocol_record(cfg, split).items():
        path = out / name
        if resume and path.is_file():
            old = read_json_object(path, "pass --overwrite to start the run again")
            if old != record:
                what = "videos drawn" if name == SHOTS_FILE else "base/novel classes"
                raise VideoCoopError(f"{path} records other {what} than the training split gives now (the data "
                                     f"changed since the run started); --resume continues the same run only: pass "
                                     f"--overwrite to start again, or choose another --output-dir")
        write_json(path, record)
    if split.shots is not None:
        log.info(f"few-shot: {cfg.shots} videos per class drawn with split seed {split_seed_of(cfg)} "
                 f"({len(split.train_set)} videos; {SHOTS_FILE})")
    if split.base_to_novel:
        log.info(f"base-to-novel: training on {len(split.classnames)} base classes; {len(split.novel)} novel classes "
                 f"held out ({CLASSES_FILE})")


__all__ = ["CLASSES_FILE", "DRAW_RULE", "HALF_SPLIT", "SHOTS_FILE", "ProtocolSplit", "apply_protocols", "draw_shots",
           "harmonic_mean", "protocol_record", "read_class_list", "shot_key", "split_classes", "split_seed_of",
           "write_protocol_files"]
