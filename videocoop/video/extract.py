"""Videos to a feature folder: ``videocoop extract``'s settings and its run.

``extract(ExtractConfig(videos=SRC, out=DST, ...))`` writes exactly what
``videocoop train`` reads: ``DST[/<split>]/<class>/<video>.pt`` (a dict whose
``features`` is ``[T, D]``, with the video's source path and the kept frames' indices
and times), ``features.json`` and ``classnames.txt`` per split folder; or, with
``packed``, one packed split per split folder (:func:`videocoop.data.packed.pack`).

The parts: :mod:`.sources` reads SRC (a folder tree or a manifest) into the sorted video
list; :mod:`.extractor` decodes, preprocesses and encodes chunks of it; this module
writes the files and shares the chunks out under torchrun (rank ``r`` of ``W`` takes
chunks ``r, r + W, ...``). A chunk goes through the same forward whichever rank takes
it, so the files are identical, bit for bit, to a one-process run.

Every file lands atomically (a temporary file, then a rename), so a rerun skips the
videos whose file exists, and a stopped run loses at most the chunk in flight. With
``overwrite``, rank 0 first moves everything the previous run wrote into ``DST/.replaced``
(deleted when the new run is done), so the folder ends holding exactly what the new
``features.json`` describes, and a stopped overwrite resumes like a fresh run.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.features import read_feature_info, write_feature_info
from ..data.layout import CLASSNAMES_FILE, FEATURE_SUFFIXES, INFO_FILE
from ..data.packed import INDEX_FILE
from ..utils.config import config_from_dict
from ..utils.distributed import World, destroy_process_group, init_process_group, world_from_env
from ..utils.errors import VideoCoopError
from ..utils.files import write_bytes, write_text
from ..utils.readers import read_json_object, read_lines
from ..utils.progress import PROGRESS, Progress
from .decode import Sampling
from .extractor import SOURCE, Extracted, Extractor, Failed
from .sources import VideoEntry, chunked, find_videos

EXTRACT_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = ("float16", "float32")
RUN_FILE = "extract.json"  # the settings of the run that is filling DST; a rerun must match them
RUN_FIELDS = {"format": str, "version": int, "settings": dict, "config": dict}  # its keys' types
FAILURES_FILE = "failures.jsonl"
PER_FILE_DIR = "per-file"  # with --packed: the per-video files the packed splits are made from
REPLACED_DIR = ".replaced"  # with --overwrite: the previous run's files, until the new run is done
#: How long a rank waits for the others: they meet only at the end, and an uneven split
#: can keep one waiting for hours, far past torch's default 30 minutes.
RANK_TIMEOUT = datetime.timedelta(days=7)


@dataclass
class ExtractConfig:
    """Everything an extraction depends on: one field per ``videocoop extract`` flag."""

    videos: str | None = None  # SRC: a class-folder tree (split folders above the classes are kept), or the manifest's root
    out: str | None = None  # DST: the feature folder(s) to write
    manifest: str | None = None  # a path,label CSV instead of class folders; paths relative to SRC or the CSV's folder
    clip_model: str = "ViT-B-32"  # open_clip name; the features are this tower's
    pretrained: str | None = None  # open_clip pretrained tag already in the local cache
    clip_checkpoint: str | None = None  # local CLIP weights file (wins over pretrained)
    clip_seed: int = 0  # seed of random CLIP weights when none are given (tests, demos)
    num_frames: int | None = 8  # middle frame of N equal segments (the loader's eval sampling); None with fps
    fps: float | None = None  # every frame at F frames/s instead (variable T); excludes num_frames
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N; torchrun: cuda:LOCAL_RANK
    precision: str = "auto"  # auto: fp16 on CUDA (CLIP's own inference precision), fp32 elsewhere | fp32 | fp16 | bf16
    batch_size: int = 128  # frames per image-tower forward; chunks of whole videos hold about this many
    num_workers: int | None = None  # decoding processes; None: min(4, CPUs - 1); 0 decodes in the main process
    dtype: str = "float16"  # storage: float16 (half the bytes, rel. error ~3e-4) | float32
    packed: bool = False  # also pack each split (DST/<split>: packed.json + one array); per-file under DST/per-file
    overwrite: bool = False  # redo videos already done, and replace a run with other settings
    progress: str = "auto"  # auto (a rich bar on a terminal, plain lines otherwise) | rich | plain | none

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> ExtractConfig:
        """Build from a dict, rejecting unknown keys (naming the closest and the valid ones)."""
        return config_from_dict(cls, d, what="extract config")

    def sampling(self) -> Sampling:
        if self.fps is not None:
            return Sampling(num_frames=None, fps=self.fps)
        return Sampling(num_frames=self.num_frames)

    def check(self) -> None:
        """Validate choices and ranges before anything is loaded.

        Raises:
            VideoCoopError: naming the bad value and the valid options.
        """
        if not self.videos and not self.manifest:
            raise VideoCoopError("nothing to extract: pass --videos SRC (a class-folder tree) or --manifest list.csv")
        if not self.out:
            raise VideoCoopError("no output folder: pass --out DST")
        for key, valid in (("precision", EXTRACT_PRECISIONS), ("dtype", DTYPES), ("progress", PROGRESS)):
            if getattr(self, key) not in valid:
                raise VideoCoopError(f"unknown {key} {getattr(self, key)!r}; choose one of {', '.join(valid)}")
        if self.batch_size < 1:
            raise VideoCoopError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise VideoCoopError(f"num_workers must be >= 0, got {self.num_workers}")
        self.sampling()  # exactly one of num_frames / fps, each in range
        if self.videos and not Path(self.videos).is_dir():
            raise VideoCoopError(f"--videos {self.videos} is not a folder")
        if self.manifest and not Path(self.manifest).is_file():
            raise VideoCoopError(f"--manifest {self.manifest} does not exist")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise VideoCoopError(f"--out {self.out} exists and is not a folder")


# --------------------------------------------------------------------------- files


def feature_payload(result: Extracted, dtype: str) -> dict:
    """What a video's ``.pt`` file holds (``load_feature_file`` reads ``features``)."""
    stored = result.features.to(getattr(torch, dtype))  # [T, D]
    if not torch.isfinite(stored).all():
        raise VideoCoopError(f"features of {result.entry.source} exceed {dtype}'s range; rerun with --dtype float32")
    return {
        "features": stored,
        "source": result.entry.rel,  # relative to features.json's source_root
        "label": result.entry.label,
        "frame_indices": result.indices,
        "frame_times": [round(t, 6) for t in result.times],
        "num_source_frames": result.length,
        "source_fps": round(result.fps, 6),
    }


def save_features(path: Path, payload: dict) -> None:
    """``torch.save`` to memory, then an atomic write: the bytes depend only on the payload."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue(), make_dirs=True)


# --------------------------------------------------------------------------- extract


@dataclass
class ExtractSummary:
    """What a run did (over all ranks)."""

    out: str
    written: int = 0  # feature files written by this run
    skipped: int = 0  # videos already done (their file existed)
    failed: int = 0  # videos that could not be decoded or stored (DST/failures.jsonl)
    frames: int = 0  # frames encoded by this run
    seconds: float = 0.0  # wall time of the decoding and encoding
    splits: list[str] = field(default_factory=list)  # the feature folders written (packed splits with --packed)
    failures: list[dict] = field(default_factory=list)

    def line(self) -> str:
        rate = (f"; {self.written / self.seconds:.1f} videos/s, {self.frames / self.seconds:.0f} frames/s"
                if self.written and self.seconds > 0 else "")
        tail = f" (see {Path(self.out) / FAILURES_FILE})" if self.failed else ""
        return (f"extract: {self.written} written, {self.skipped} skipped as done, {self.failed} failed{tail}; "
                f"{self.frames} frames{rate}; features in {self.out}")


def _settings(extractor: Extractor, cfg: ExtractConfig, source_root: Path) -> dict:
    """The settings a rerun into the same DST must share (else the folder would mix features)."""
    info = extractor.info()
    return {
        "clip_model": info["clip_model"], "weights": info["weights"], "sampling": info["sampling"],
        "preprocess": extractor.preprocess.to_dict(), "precision": info["precision"], "dtype": cfg.dtype,
        "source_root": str(source_root), "manifest": str(Path(cfg.manifest).resolve()) if cfg.manifest else None,
        "packed": cfg.packed,
    }


def _check_previous_run(out: Path, settings: dict, overwrite: bool) -> None:
    path = out / RUN_FILE
    if overwrite or not path.is_file():
        return
    old = read_json_object(path, "pass --overwrite to start over, or choose another --out", fields=RUN_FIELDS,
                           required=("settings",))["settings"]
    diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
    if diff:
        raise VideoCoopError(f"{out} holds features extracted with other settings ({'; '.join(diff)}, as {path} "
                             f"records them); pass --overwrite to redo them with these, or choose another --out")


def _set_aside(out: Path, entries: list[VideoEntry]) -> None:
    """``--overwrite``, on rank 0 before any rank writes: move what the previous run wrote into
    ``DST/.replaced``: its failures.jsonl, its packed splits, and in each feature folder (one
    this run writes into, or one whose features.json says ``videocoop extract`` made it) the
    features.json, classnames.txt and the feature files of the class folders this run or the
    previous one names, class folders left empty going too. Nothing else is touched."""
    roots: dict[Path, set[str]] = {}  # feature folder -> its class folders
    for e in entries:  # this run's folders in both layouts: a stopped run of the other may have left files
        for root in (out / e.split, out / PER_FILE_DIR / e.split):
            roots.setdefault(root, set()).add(e.label)
    splits = []  # packed splits
    for folder, dirs, names in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        made_here = (read_feature_info(here) or {}).get("source") == SOURCE if INFO_FILE in names else False
        if INDEX_FILE in names:
            dirs[:] = []
            if made_here:
                splits.append(here)
        elif made_here:
            listed = read_lines(here / CLASSNAMES_FILE, comments=False) if CLASSNAMES_FILE in names else []
            roots.setdefault(here, set()).update(listed)
    aside = out / REPLACED_DIR

    def move(path: Path) -> None:
        target = aside / path.relative_to(out)
        if target.exists():  # set aside by an earlier overwrite that stopped: keep that one, the oldest
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)

    for split in splits:
        move(split)
    for root, classes in roots.items():
        if not root.is_dir() or (root / INDEX_FILE).is_file():  # a packed split: moved whole if ours
            continue
        for name in (INFO_FILE, CLASSNAMES_FILE):
            if (root / name).is_file():
                move(root / name)
        for c in sorted(classes):
            folder = root / c
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.is_file() and f.suffix in FEATURE_SUFFIXES and not f.name.startswith("."):
                    move(f)
            if not any(folder.iterdir()):
                folder.rmdir()
    if (out / FAILURES_FILE).is_file():
        move(out / FAILURES_FILE)


def extract(cfg: ExtractConfig, extractor: Extractor | None = None) -> ExtractSummary:
    """Extract a video tree (or manifest) into a feature folder; see the module docstring.

    Args:
        cfg: the settings.
        extractor: use this one instead of building it from ``cfg`` (its CLIP, sampling
            and preprocessing win over ``cfg``'s).

    Returns:
        The summary, the same on every rank.

    Raises:
        VideoCoopError: bad settings or inputs, or a DST holding features made with other
            settings (without ``overwrite``). A video that cannot be decoded is not an
            error: it is recorded in ``DST/failures.jsonl`` and counted.
    """
    cfg.check()
    source_root, entries = find_videos(cfg.videos, cfg.manifest)
    world = world_from_env()
    # gloo whatever the device: the ranks exchange only a barrier, the counts and the failures
    started = init_process_group(world, backend="gloo", timeout=RANK_TIMEOUT)
    try:
        if extractor is None:
            extractor = Extractor.from_config(cfg)  # on cuda:LOCAL_RANK under torchrun
        return _extract(cfg, extractor, source_root, entries, world)
    finally:
        if started:
            destroy_process_group()


def _extract(cfg: ExtractConfig, extractor: Extractor, source_root: Path, entries: list[VideoEntry],
             world: World) -> ExtractSummary:
    out = Path(cfg.out)
    files_root = out / PER_FILE_DIR if cfg.packed else out
    settings = _settings(extractor, cfg, source_root)
    _check_previous_run(out, settings, cfg.overwrite)  # every rank reads before rank 0 writes
    world.barrier()
    if world.is_main:
        if cfg.overwrite:
            _set_aside(out, entries)
        config = {k: v for k, v in cfg.to_dict().items() if k != "out"}  # the folder itself: the record moves with it
        write_text(out / RUN_FILE, json.dumps({"format": "videocoop-extract", "version": 1, "settings": settings,
                                               "config": config}, indent=2) + "\n", make_dirs=True)
    world.barrier()  # no rank writes before the previous run's files are set aside
    chunks = chunked(entries, extractor.videos_per_chunk())[world.rank::world.size]
    todo = [[e for e in chunk if cfg.overwrite or not (files_root / e.split / e.out).is_file()] for chunk in chunks]
    mine = sum(len(c) for c in chunks)
    count = sum(len(c) for c in todo)
    summary = ExtractSummary(str(out), skipped=mine - count)
    progress = Progress(cfg.progress if world.is_main else "none", count,
                        f"extract (rank 0 of {world.size})" if world.distributed else "extract", chunks=todo)
    t0 = time.perf_counter()
    try:
        for result in extractor.run(todo):
            frames = 0
            if isinstance(result, Extracted):
                try:
                    save_features(files_root / result.entry.split / result.entry.out, feature_payload(result, cfg.dtype))
                    frames = result.features.shape[0]
                    summary.written += 1
                    summary.frames += frames
                except VideoCoopError as e:
                    result = Failed(result.entry, str(e))
            if isinstance(result, Failed):
                summary.failed += 1
                summary.failures.append({"source": result.entry.rel, "path": str(result.entry.source),
                                         "error": result.error})
            progress.advance(frames)
    finally:
        progress.close()
    summary.seconds = time.perf_counter() - t0
    world.barrier()  # every rank's files are on disk
    parts = world.gather_object(dataclasses.asdict(summary))
    total = ExtractSummary(str(out), seconds=max(p["seconds"] for p in parts))
    for p in parts:
        for key in ("written", "skipped", "failed", "frames"):
            setattr(total, key, getattr(total, key) + p[key])
        total.failures.extend(p["failures"])
    total.failures.sort(key=lambda f: f["source"])
    if world.is_main:
        total.splits = _finish(cfg, extractor, settings, entries, total.failures)
    total.splits = world.gather_object(total.splits)[0]  # rank 0's
    return total


def _finish(cfg: ExtractConfig, extractor: Extractor, settings: dict, entries: list[VideoEntry],
            failures: list[dict]) -> list[str]:
    """Rank 0, after every rank is done: features.json (the run's :func:`_settings` of the
    sources and storage) and classnames.txt per split, failures.jsonl, the packed splits."""
    out = Path(cfg.out)
    files_root = out / PER_FILE_DIR if cfg.packed else out
    info = {**extractor.info(), **{k: settings[k] for k in ("source_root", "manifest", "dtype")}}
    splits = []
    for split in sorted({e.split for e in entries}):
        classes = sorted({e.label for e in entries if e.split == split and (files_root / split / e.out).is_file()})
        if not classes:
            continue
        root = files_root / split
        write_text(root / CLASSNAMES_FILE, "".join(f"{c}\n" for c in classes))
        write_feature_info(root, info)  # checks the keys; atomic too
        if cfg.packed:
            from ..data.packed import pack

            pack(root, out / split, dtype=cfg.dtype, overwrite=True)  # a rerun's: made again from every file
        splits.append(str(out / split) if split else str(out))
    failures_path = out / FAILURES_FILE
    if failures:
        write_text(failures_path, "".join(json.dumps(f) + "\n" for f in failures))
    else:
        failures_path.unlink(missing_ok=True)  # an earlier run's list: those videos are done now
    shutil.rmtree(out / REPLACED_DIR, ignore_errors=True)  # the run is done: what it replaced goes
    return splits
