"""The videos to extract: a folder tree or a manifest read into a sorted list, and its chunks.

How the input is read (docs/extraction.md has the long form):

* a folder tree: the class is the folder that holds the video; the folders between
  SRC and the class folder are the split, kept under DST (``SRC/train/jump/a.mp4``
  -> ``DST/train/jump/a.pt``, and ``DST/train`` is a feature folder);
* or a ``path,label`` CSV (``manifest``), paths relative to SRC or to the CSV's folder.

The list is sorted by output path, so it, and the chunks cut from it, depend only on
the input and the settings: every rank of a torchrun run sees the same chunks.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.layout import VIDEO_SUFFIXES, is_video_file
from ..data.manifest import read_manifest
from ..utils.errors import VideoCoopError


@dataclass(frozen=True)
class VideoEntry:
    """One source video and where its features go."""

    source: Path  # the file
    rel: str  # its path relative to the source root (posix), recorded in its feature file
    label: str | None  # class name; None for unlabelled videos (predict)
    split: str  # posix folder under DST holding the class folders; '' for DST itself
    out: str  # the feature file, relative to the split's feature folder root (DST or DST/per-file)


def _posix(path: Path) -> str:
    s = path.as_posix()
    return "" if s == "." else s


def find_videos(videos: str | os.PathLike | None = None, manifest: str | os.PathLike | None = None,
                *, labelled: bool = True) -> tuple[Path, list[VideoEntry]]:
    """The videos to extract, sorted by output path, and the source root.

    Args:
        videos: a folder tree (see the module docstring for how its depth is read); with
            ``manifest``, the root its paths are relative to.
        manifest: a ``path,label`` CSV; its rows, in any order.
        labelled: every video needs a class (its folder, or the manifest's label).
            False (predict): videos may sit anywhere, a class folder is used when present.

    Raises:
        VideoCoopError: no videos, a video outside a class folder, a split folder that
            is also a class folder, two videos that would write the same file, a bad
            manifest (the message names the row).
    """
    if manifest is not None:
        root = Path(videos) if videos is not None else Path(manifest).parent
        entries = _from_manifest(Path(manifest), root)
    else:
        if videos is None:
            raise VideoCoopError("pass a videos folder or a manifest")
        root = Path(videos)
        entries = _from_tree(root, labelled)
    if not entries:
        raise VideoCoopError(f"no video files ({' '.join(VIDEO_SUFFIXES)}) under {root}")
    seen: dict[tuple[str, str], VideoEntry] = {}
    for e in entries:
        key = (e.split, e.out)
        if key in seen:
            raise VideoCoopError(f"{seen[key].source} and {e.source} would both write {Path(e.split, e.out)}; "
                                 f"rename one of them")
        seen[key] = e
    return root.resolve(), sorted(entries, key=lambda e: (e.split, e.out))


def _from_tree(root: Path, labelled: bool) -> list[VideoEntry]:
    entries = []
    above = {str(root): [os.path.realpath(root)]}  # each folder's real path and those of the folders above it
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:  # links are followed (a tree of links is a tree), but never back up into themselves
            real = os.path.realpath(os.path.join(folder, d))
            if real in above[folder]:
                raise VideoCoopError(f"{os.path.join(folder, d)} is a symbolic link loop: it leads back to {real}, "
                                     f"which holds it; remove the link, or link to the videos themselves")
            above[os.path.join(folder, d)] = [*above[folder], real]
        here = Path(folder)
        for name in sorted(files):
            if not is_video_file(name):
                continue
            path = here / name
            rel = path.relative_to(root)
            if here == root:
                if labelled:
                    raise VideoCoopError(
                        f"{path} sits directly in {root}, outside a class folder; put each video in a folder named "
                        f"after its class ({root}/<class>/{name}), or list them with --manifest (path,label)"
                    )
                entries.append(VideoEntry(path, rel.as_posix(), None, "", Path(name).with_suffix(".pt").as_posix()))
                continue
            split = _posix(rel.parent.parent)
            entries.append(VideoEntry(path, rel.as_posix(), here.name, split, f"{here.name}/{Path(name).stem}.pt"))
    if labelled:
        splits = sorted({e.split for e in entries})
        for outer in splits:
            for inner in splits:
                if inner != outer and (outer == "" or inner.startswith(outer + "/")):
                    raise VideoCoopError(
                        f"{root / inner} holds class folders and so does {root / outer}, which is above it: "
                        f"{root / inner} would be read as a class of {root / outer}; move the class folders of "
                        f"{root / outer or root} into a split folder of their own"
                    )
    return entries


def _from_manifest(manifest: Path, root: Path) -> list[VideoEntry]:
    rows = read_manifest(manifest)
    entries = []
    for row in rows:
        rel, label = row["path"], row["label"]
        if "/" in label or label.startswith("."):
            raise VideoCoopError(f"manifest {manifest}: label {label!r} cannot be a folder name")
        path = root / rel
        entries.append(VideoEntry(path, Path(rel).as_posix(), label, "", f"{label}/{Path(rel).stem}.pt"))
    if not any(e.source.is_file() for e in entries):
        raise VideoCoopError(f"none of the {len(entries)} videos manifest {manifest} names exists under {root} "
                             f"(e.g. {entries[0].source}); pass the folder its paths are relative to with --videos")
    return entries


def chunked(entries: Sequence[VideoEntry], size: int) -> list[list[VideoEntry]]:
    """Consecutive chunks of ``size`` videos (the last may be shorter)."""
    return [list(entries[i:i + size]) for i in range(0, len(entries), size)]


__all__ = ["VideoEntry", "chunked", "find_videos"]
