"""Videos to a feature folder: decode, sample, preprocess, run CLIP's image tower, write.

``extract(ExtractConfig(videos=SRC, out=DST, ...))`` writes exactly what
``videocoop train`` reads: ``DST[/<split>]/<class>/<video>.pt`` (a dict whose
``features`` is ``[T, D]``, with the video's source path and the kept frames' indices
and times), ``features.json`` and ``classnames.txt`` per split folder; or, with
``packed``, one packed split per split folder (:func:`videocoop.data.packed.pack`).

How the input is read (docs/extraction.md has the long form):

* a folder tree: the class is the folder that holds the video; the folders between
  SRC and the class folder are the split, kept under DST (``SRC/train/jump/a.mp4``
  -> ``DST/train/jump/a.pt``, and ``DST/train`` is a feature folder);
* or a ``path,label`` CSV (``manifest``), paths relative to SRC or to the CSV's folder.

The work: the video list is sorted and cut into chunks of whole videos (about
``batch_size`` frames each); DataLoader workers decode chunks
(:func:`videocoop.video.read_frames`, seeking to the kept frames) while the main process
preprocesses the previous chunk on the device and runs the image tower over it, a
forward spanning its videos. Chunks depend only on the video list and the settings, so
under torchrun (rank ``r`` of ``W`` takes chunks ``r, r + W, ...``) every frame goes
through the same forward as in one process: the files are identical, bit for bit.

Every file lands atomically (a temporary file, then a rename), so a rerun skips the
videos whose file exists, and a stopped run loses at most the chunk in flight.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..clip.loader import load_clip, weights_id
from ..data.features import write_feature_info
from ..data.layout import CLASSNAMES_FILE, VIDEO_SUFFIXES, is_video_file
from ..data.manifest import read_manifest
from ..utils.distributed import (
    World,
    destroy_process_group,
    device_for,
    init_process_group,
    resolve_device,
    world_from_env,
)
from ..utils.errors import VideoCoopError
from ..utils.files import read_json_object, write_bytes, write_text
from ..utils.progress import PROGRESS, Progress
from .decode import Sampling, VideoDecodeError, decoder_info, read_frames
from .preprocess import Preprocess

EXTRACT_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = ("float16", "float32")
RUN_FILE = "extract.json"  # the settings of the run that is filling DST; a rerun must match them
FAILURES_FILE = "failures.jsonl"
PER_FILE_DIR = "per-file"  # with --packed: the per-video files the packed splits are made from
SOURCE = "videocoop extract"  # features.json "source"
#: How long a rank waits for the others: they meet only at the end, and an uneven split
#: can keep one waiting for hours, far past torch's default 30 minutes.
RANK_TIMEOUT = datetime.timedelta(days=7)
#: Frames a video is assumed to give under fps sampling when cutting chunks (8 s at 2 fps).
FPS_FRAMES_GUESS = 16


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
        """Build from a dict, rejecting unknown keys (naming the valid ones)."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise VideoCoopError(f"unknown extract setting(s) {unknown}; valid: {', '.join(valid)}")
        return cls(**d)

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


# --------------------------------------------------------------------------- the video list


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
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
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
    for n, row in enumerate(rows, start=2):  # row 1 is the header
        rel, label = (row["path"] or "").strip(), (row["label"] or "").strip()
        if not rel or not label:
            raise VideoCoopError(f"manifest {manifest} row {n} needs both a path and a label, got {row}")
        if "/" in label or label.startswith("."):
            raise VideoCoopError(f"manifest {manifest} row {n}: label {label!r} cannot be a folder name")
        path = root / rel
        entries.append(VideoEntry(path, Path(rel).as_posix(), label, "", f"{label}/{Path(rel).stem}.pt"))
    if not any(e.source.is_file() for e in entries):
        raise VideoCoopError(f"none of the {len(entries)} videos manifest {manifest} names exists under {root} "
                             f"(e.g. {entries[0].source}); pass the folder its paths are relative to with --videos")
    return entries


def chunked(entries: Sequence[VideoEntry], size: int) -> list[list[VideoEntry]]:
    """Consecutive chunks of ``size`` videos (the last may be shorter)."""
    return [list(entries[i:i + size]) for i in range(0, len(entries), size)]


# --------------------------------------------------------------------------- the extractor


@dataclass
class Extracted:
    """One video's features and where they came from."""

    entry: VideoEntry
    features: torch.Tensor  # [T, D] float32, on the CPU
    indices: list[int]  # the kept frames
    times: list[float]  # their times, seconds from the first frame
    length: int  # frames in the video
    fps: float


@dataclass
class Failed:
    entry: VideoEntry
    error: str


class _Decode(Dataset):
    """Item ``i``: the kept frames of video ``i``, or the reason it could not be decoded."""

    def __init__(self, entries: Sequence[VideoEntry], sampling: Sampling):
        self.entries, self.sampling = list(entries), sampling

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        path = self.entries[i].source
        try:
            if not path.is_file():
                raise VideoDecodeError(f"{path} does not exist")
            f = read_frames(path, self.sampling)
        except VideoDecodeError as e:
            return {"i": i, "error": str(e)}
        except Exception as e:  # noqa: BLE001: a video must never stop the run; the reason is recorded
            return {"i": i, "error": f"cannot decode {path}: {type(e).__name__}: {e}"}
        return {"i": i, "error": None, "frames": f.frames, "indices": f.indices, "times": f.times,
                "length": f.length, "fps": f.fps}


def _as_list(items: list) -> list:
    return items


def default_workers() -> int:
    """min(4, CPUs - 1), at least 1: decoding overlaps the image tower in the main process."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@dataclass
class Extractor:
    """CLIP's image tower over videos: decode, sample, preprocess, encode.

    Build it with :meth:`from_config`, or from parts (a test swaps a part to plant a fault).
    ``run(chunks)`` yields :class:`Extracted` or :class:`Failed` per video.
    """

    clip_model: nn.Module  # frozen open_clip model, on ``device``, weights in ``precision``
    clip_name: str  # its open_clip name, recorded in features.json
    weights: str  # videocoop.clip.weights_id of its weights
    sampling: Sampling
    preprocess: Preprocess
    device: torch.device
    precision: str = "fp32"  # what the image tower runs in (fp32 | fp16 | bf16)
    batch_size: int = 128  # frames per forward
    num_workers: int = 0  # decoding processes; 0: in the main process

    @classmethod
    def from_config(cls, cfg: ExtractConfig, device: torch.device | None = None) -> Extractor:
        """Load the CLIP ``cfg`` names; preprocessing is the model's own.

        Args:
            cfg: the settings.
            device: where the tower runs; None: ``cfg.device`` for this process
                (``cuda:LOCAL_RANK`` under torchrun, see :func:`videocoop.utils.distributed.device_for`).
        """
        device = device or device_for(world_from_env(), resolve_device(cfg.device))
        precision = cfg.precision if cfg.precision != "auto" else ("fp16" if device.type == "cuda" else "fp32")
        clip_model, _ = load_clip(cfg.clip_model, pretrained=cfg.pretrained, checkpoint=cfg.clip_checkpoint,
                                  device=device, precision=precision, seed=cfg.clip_seed)
        return cls(clip_model, cfg.clip_model, weights_id(cfg.pretrained, cfg.clip_checkpoint, cfg.clip_seed),
                   cfg.sampling(), Preprocess.from_model(clip_model), device, precision, cfg.batch_size,
                   default_workers() if cfg.num_workers is None else cfg.num_workers)

    @property
    def dim(self) -> int:
        visual = getattr(self.clip_model, "visual", None)
        dim = getattr(visual, "output_dim", None)
        if dim is None:
            from ..clip.loader import embed_dim

            dim = embed_dim(self.clip_model)
        return int(dim)

    def info(self) -> dict:
        """What ``features.json`` records about how the features were made."""
        return {
            "clip_model": self.clip_name,
            "weights": self.weights,
            "num_frames": self.sampling.num_frames,
            "dim": self.dim,
            "source": SOURCE,
            "sampling": self.sampling.to_dict(),
            "preprocess": {**self.preprocess.to_dict(), "implementation": (
                "torchvision uint8 antialiased resize (cpu)" if self.device.type == "cpu"
                else f"torchvision antialiased resize, two float passes rounded to uint8 ({self.device.type})")},
            "precision": self.precision,
            "decoder": decoder_info(),
        }

    def videos_per_chunk(self) -> int:
        """Whole videos per chunk: about ``batch_size`` frames."""
        per_video = self.sampling.num_frames or FPS_FRAMES_GUESS
        return max(1, self.batch_size // per_video)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``[N, 3, h, w]`` -> raw image features ``[N, D]`` float32."""
        visual = self.clip_model.visual
        conv = getattr(visual, "conv1", None)  # open_clip keeps embeddings fp32 in half precision: ask the first layer
        dtype = conv.weight.dtype if conv is not None else next(p.dtype for p in visual.parameters() if p.dim() > 1)
        with torch.inference_mode():
            return self.clip_model.encode_image(pixels.to(dtype)).float()  # [N, D]

    def run(self, chunks: Sequence[Sequence[VideoEntry]]) -> Iterator[Extracted | Failed]:
        """Extract every video of ``chunks``; one image-tower pass per ``batch_size`` frames of a chunk."""
        flat = [e for chunk in chunks for e in chunk]
        if not flat:
            return
        batches, start = [], 0
        for chunk in chunks:
            if chunk:
                batches.append(list(range(start, start + len(chunk))))
                start += len(chunk)
        workers = self.num_workers
        loader = DataLoader(_Decode(flat, self.sampling), batch_sampler=batches, collate_fn=_as_list,
                            num_workers=workers, prefetch_factor=2 if workers else None,
                            pin_memory=self.device.type == "cuda")
        try:
            for items in loader:
                yield from self._encode_chunk(flat, items)
        except RuntimeError as e:
            if "DataLoader worker" in str(e):  # a decoder crashed its process (FFmpeg on a hostile file)
                raise VideoCoopError(f"a decoding worker died ({e}); the videos done so far are saved: rerun with "
                                     f"--num-workers 0 to see which video stops it") from e
            raise

    def _encode_chunk(self, flat: Sequence[VideoEntry], items: list[dict]) -> Iterator[Extracted | Failed]:
        good = [it for it in items if it["error"] is None]
        for it in items:
            if it["error"] is not None:
                yield Failed(flat[it["i"]], it["error"])
        if not good:
            return
        crops = torch.cat([self.preprocess.resize_crop(it["frames"].to(self.device, non_blocking=True))
                           for it in good])  # [sum T, 3, h, w] uint8
        features = torch.cat([self.encode(self.preprocess.normalize(crops[s:s + self.batch_size]))
                              for s in range(0, crops.shape[0], self.batch_size)]).cpu()  # [sum T, D]
        counts = [len(it["indices"]) for it in good]
        for it, f in zip(good, features.split(counts)):
            yield Extracted(flat[it["i"]], f, it["indices"], it["times"], it["length"], it["fps"])


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
    old = read_json_object(path, "pass --overwrite to start over, or choose another --out").get("settings", {})
    diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
    if diff:
        raise VideoCoopError(f"{out} holds features extracted with other settings ({'; '.join(diff)}); pass --overwrite "
                             f"to redo them with these, or choose another --out")


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
        config = {k: v for k, v in cfg.to_dict().items() if k != "out"}  # the folder itself: the record moves with it
        write_text(out / RUN_FILE, json.dumps({"format": "videocoop-extract", "version": 1, "settings": settings,
                                               "config": config}, indent=2) + "\n", make_dirs=True)
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
        total.splits = _finish(cfg, extractor, source_root, entries, total.failures)
    total.splits = world.gather_object(total.splits)[0]  # rank 0's
    return total


def _finish(cfg: ExtractConfig, extractor: Extractor, source_root: Path, entries: list[VideoEntry],
            failures: list[dict]) -> list[str]:
    """Rank 0, after every rank is done: features.json and classnames.txt per split,
    failures.jsonl, the packed splits."""
    out = Path(cfg.out)
    files_root = out / PER_FILE_DIR if cfg.packed else out
    info = {**extractor.info(), "source_root": str(source_root),
            "manifest": str(Path(cfg.manifest).resolve()) if cfg.manifest else None, "dtype": cfg.dtype}
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

            pack(root, out / split, dtype=cfg.dtype)
        splits.append(str(out / split) if split else str(out))
    failures_path = out / FAILURES_FILE
    if failures:
        write_text(failures_path, "".join(json.dumps(f) + "\n" for f in failures))
    else:
        failures_path.unlink(missing_ok=True)  # an earlier run's list: those videos are done now
    return splits
