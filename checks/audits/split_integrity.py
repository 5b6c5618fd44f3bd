"""split-integrity: no video in two splits, one name per class, every class with videos, base and novel apart,
a K-shot draw of exactly K."""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..causes import duplicate_names
from ..core import AuditTarget, Outcome, Status, audit
from ..locations import locate
from .class_order import key

#: A training and a validation video whose mean frame features (each frame L2-normalised) have at least this
#: cosine are one video. Measured (docs/studies/split_integrity.py, split_integrity.txt): one video stored again
#: (re-saved in fp16, re-extracted with 1e-3 noise and fp16, re-encoded into another container and extracted)
#: is within 1 - cosine <= 9.5e-7 of itself; two different videos of one class come within 2.6e-4 (synthetic
#: videos of one pattern through the random tiny tower; 1.8e-3 through random ViT-B-32). The line, 1 - cosine
#: <= 1e-5, sits 10x above the copies and 26x below the closest different pair. Real CLIP features of two clips
#: of one scene can come closer than these, so the line is drawn near the copies. Read with other frames (a frame
#: dropped: 1 - cosine 3e-2 and more), a video is not caught by its features: by its source or content hash only.
DUPLICATE_COSINE = 0.99999
#: Videos compared at once: a chunk of validation videos against every training video ([CHUNK, n_train] floats).
CHUNK = 1024
#: Items read per split.
MAX_ITEMS = 20_000


@dataclass
class Split:
    """What one split holds, read once: each video's mean feature, label, content hash and source."""

    name: str
    classnames: list[str]
    labels: list[int] = field(default_factory=list)
    features: torch.Tensor | None = None  # [N, D] mean of the L2-normalised frames, L2-normalised
    hashes: list[str] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)  # the file (or source video) each item was read from
    read: int = 0
    total: int = 0


def _evaluation_view(ds):
    """A dataset with a ``train`` flag (random frame offsets) read as evaluation reads it: the same video gives
    the same frames in any split."""
    if isinstance(getattr(ds, "train", None), bool) and ds.train:
        import copy

        ds = copy.copy(ds)
        ds.train = False
    return ds


def _source(meta, info_root: str | None, path_cache: dict) -> str | None:
    """The file an item was read from (``meta["path"]``, resolved) or, when its features.json names source
    videos, the source video the feature file records."""
    path = meta.get("path") if isinstance(meta, Mapping) else meta if isinstance(meta, (str, os.PathLike)) else None
    if isinstance(meta, Mapping) and meta.get("source"):
        return f"source:{meta['source']}"
    if path is None:
        return None
    if info_root is not None and os.path.isfile(path):
        if path not in path_cache:
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                src = payload.get("source") if isinstance(payload, Mapping) else None
            except Exception:  # noqa: BLE001: extraction-parity reports unreadable sources
                src = None
            path_cache[path] = f"source:{Path(info_root) / src}" if src else None
        if path_cache[path]:
            return path_cache[path]
    return f"file:{os.path.abspath(path) if os.path.exists(path) else path}"


def read_split(name: str, ds, classnames: list[str]) -> Split:
    names = list(getattr(ds, "classnames", None) or classnames)
    split = Split(name, names, total=len(ds))
    info = getattr(ds, "info", None)
    info_root = info.get("source_root") if isinstance(info, Mapping) else None
    view, feats, cache = _evaluation_view(ds), [], {}
    for i in range(min(len(ds), MAX_ITEMS)):
        item = view[i]
        x = item[0]
        x = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        x = x.detach().float().cpu()  # [T, D]
        split.hashes.append(hashlib.sha1(x.contiguous().numpy().tobytes()).hexdigest())
        feats.append(F.normalize(F.normalize(x, dim=-1).mean(0), dim=0))  # [D]
        split.labels.append(int(item[1]))
        split.sources.append(_source(item[2] if len(item) > 2 else None, info_root, cache))
    split.read = len(feats)
    split.features = torch.stack(feats) if feats else torch.zeros(0, 1)
    return split


def nearest(val: torch.Tensor, train: torch.Tensor, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """For each validation video ``[Nv, D]`` its largest cosine to a training video ``[Nt, D]`` and which one,
    ``CHUNK`` validation videos at a time (memory ``CHUNK x Nt``; 10k x 10k in seconds on one core)."""
    best, which = torch.full((val.shape[0],), -2.0), torch.zeros(val.shape[0], dtype=torch.long)
    for s in range(0, val.shape[0], chunk):
        cos = val[s:s + chunk] @ train.t()  # [chunk, Nt]
        best[s:s + chunk], which[s:s + chunk] = cos.max(dim=1)
    return best, which


def shared_videos(a: Split, b: Split) -> tuple[list[str], float]:
    """Videos of ``b`` that are also in ``a``: the same source file or video, the same content, or features with
    cosine >= DUPLICATE_COSINE; and the largest cosine between two different videos of the splits."""
    found = []
    where_a = {s: i for i, s in enumerate(a.sources) if s}
    hash_a = {h: i for i, h in enumerate(a.hashes)}
    dup = set()
    for j, (src, h) in enumerate(zip(b.sources, b.hashes)):
        if src and src in where_a:
            found.append(f"{b.name} video {j} and {a.name} video {where_a[src]} are one file ({src.split(':', 1)[1]})")
            dup.add(j)
        elif h in hash_a:
            found.append(f"{b.name} video {j} holds exactly the features of {a.name} video {hash_a[h]}")
            dup.add(j)
    top = -1.0
    if a.read and b.read and a.features.shape[1] == b.features.shape[1]:
        best, which = nearest(b.features, a.features)
        for j in range(len(best)):
            if j not in dup and float(best[j]) >= DUPLICATE_COSINE:
                found.append(f"{b.name} video {j} and {a.name} video {int(which[j])} are near-identical (cosine "
                             f"{float(best[j]):.7f} >= {DUPLICATE_COSINE})")
        rest = [float(best[j]) for j in range(len(best)) if j not in dup]
        top = max(rest, default=-1.0)
    return found, top


def counts(split: Split) -> tuple[Counter, str]:
    c = Counter(y for y in split.labels if 0 <= y < len(split.classnames))
    per = [c.get(i, 0) for i in range(len(split.classnames))]
    shown = (f"{per[0]} video(s) per class" if len(set(per)) == 1 else f"{min(per)} to {max(per)} videos per class "
             f"(fewest: {', '.join(f'{split.classnames[i]!r} {per[i]}' for i in np.argsort(per, kind='stable')[:3])})")
    return c, f"{split.name}: {split.read} of {split.total} videos read, {len(split.classnames)} classes, {shown}"


@audit(
    "split-integrity",
    title="The splits are what they say",
    problem="splits that leak or are not what they claim: a video in both the training and the validation split "
            "(copied, listed twice, re-extracted), two classes of one name ('brush_hair' and 'brush hair'), a class "
            "without videos, a split with more classes in its list than in its videos (221 for 220), base and novel "
            "classes that overlap, a K-shot draw that is not K per class: the numbers measure something else",
    fix="every validation video differs from every training video (source file, content hash, and features: cosine "
        "below a measured line, compared in chunks); class names unique once '_' reads as a space; every listed class "
        "has videos in every split (the count per class shown); base and novel disjoint; exactly K per class",
    remediation="split by source video (one list per split, no file in two); dedupe the class list; drop classes "
                "without videos from the list or add their videos; draw the few-shot split per class (videocoop's "
                "--shots does it from a seed)",
    needs=("data",),
)
def split_integrity(target: AuditTarget) -> Outcome:
    """Read every split once; compare them pairwise; count each class."""
    names = list(target.classnames)
    splits = [read_split(n, ds, names) for n, ds in target.datasets()]
    location = locate(type(target.datasets()[0][1]))
    problems, evidence, metrics = [], [], {}
    dup = duplicate_names(target)
    if dup["cause"]:
        problems.append(dup["cause"])
    for s in splits:
        c, line = counts(s)
        evidence.append(line)
        if s.classnames != names:
            keys = [key(n) for n in s.classnames]
            twins = sorted({n for n, k in zip(s.classnames, keys) if keys.count(k) > 1})
            if twins:
                problems.append(f"the {s.name} split's class list repeats {', '.join(map(repr, twins[:4]))} once '_' "
                                f"reads as a space")
        empty = [n for i, n in enumerate(s.classnames) if not c.get(i)]
        if empty and s.read == s.total:
            problems.append(f"the {s.name} split lists {len(s.classnames)} classes but its videos belong to "
                            f"{len(s.classnames) - len(empty)}: {', '.join(map(repr, empty[:4]))} "
                            f"{'has' if len(empty) == 1 else 'have'} no videos")
        metrics[f"{s.name}_videos"] = s.read
    if target.shots and splits:
        c, _ = counts(splits[0])
        off = [(n, c.get(i, 0)) for i, n in enumerate(splits[0].classnames) if c.get(i, 0) != target.shots]
        if off and splits[0].read == splits[0].total:
            problems.append(f"the {target.shots}-shot training split holds {', '.join(f'{n!r} {k}' for n, k in off[:4])} "
                            f"video(s){' ...' if len(off) > 4 else ''}, not {target.shots} per class")
        evidence.append(f"{target.shots} shots declared: {len(off)} class(es) hold another number")
    if target.novel_classnames:
        base = {key(n): n for n in names}
        both = [n for n in target.novel_classnames if key(n) in base]
        evidence.append(f"base-to-novel: {len(names)} base and {len(target.novel_classnames)} novel classes, "
                        f"{len(both)} in both")
        if both:
            problems.append(f"{len(both)} novel class(es) are base classes too ({', '.join(map(repr, both[:4]))}): "
                            f"novel accuracy is measured on classes training saw")
    top = -1.0
    for i in range(len(splits)):
        for j in range(i + 1, len(splits)):
            found, best = shared_videos(splits[i], splits[j])
            top = max(top, best)
            evidence.append(f"{splits[j].name} against {splits[i].name}: {len(found)} shared video(s); the closest "
                            f"two different videos have cosine {best:.7f} (one video at >= {DUPLICATE_COSINE})")
            if found:
                problems.append(f"{len(found)} video(s) in two splits: {found[0]}")
                evidence += found[1:4]
    metrics.update(closest_cosine=top, problems=len(problems))
    if problems:
        return Outcome(Status.FAIL, problems[0], metrics, evidence + problems[1:], location)
    return Outcome(Status.PASS, f"{len(splits)} split(s), {sum(s.read for s in splits)} videos: none in two splits "
                   f"(closest different videos: cosine {top:.4f}), {len(names)} distinct class names, every class with "
                   f"videos", metrics, evidence, location)
