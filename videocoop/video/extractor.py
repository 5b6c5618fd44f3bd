"""The extractor: CLIP's image tower over videos (decode, sample, preprocess, encode).

The work: the video list (:mod:`.sources`) is cut into chunks of whole videos (about
``batch_size`` frames each); DataLoader workers decode chunks (:class:`DecodedPieces`:
:func:`videocoop.video.iter_frames`, seeking to the kept frames) and hand each video's
kept frames over in pieces as they are decoded, while the main process preprocesses the
pieces on the device and runs the image tower over every ``batch_size`` frames of a
chunk, a forward spanning its videos. A chunk is encoded the same way whichever process
takes it, so the features do not depend on how the chunks are shared out; and no process
holds more than a few pieces of frames at full resolution, however long the videos
(``--fps`` keeps every frame of a long video: :meth:`Extractor.decoded` states the bound).

:class:`Extractor` yields one :class:`Extracted` (or :class:`Failed`) per video;
:func:`videocoop.video.extract` writes them to a feature folder, and predict scores them.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..clip.loader import embed_dim, load_clip_of, weights_id_of
from ..utils.distributed import device_for, resolve_device, world_from_env
from ..utils.errors import VideoCoopError
from .decode import RESTART, Sampling, VideoDecodeError, decoder_info, iter_frames
from .preprocess import Preprocess
from .sources import VideoEntry

if TYPE_CHECKING:
    from .extract import ExtractConfig

SOURCE = "videocoop extract"  # features.json "source"
#: Frames a video is assumed to give under fps sampling when cutting chunks (8 s at 2 fps).
FPS_FRAMES_GUESS = 16


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
    """One video that could not be decoded (or stored), and why."""

    entry: VideoEntry
    error: str


class DecodedPieces(IterableDataset):
    """The chunks' videos decoded, as items of at most ``piece`` kept frames each, in order.

    A DataLoader worker ``w`` of ``W`` takes chunks ``w, w + W, ...`` (all of them without
    workers) and gives each video's kept frames in pieces as they are decoded
    (:func:`videocoop.video.iter_frames`), so that no process holds a long video whole. An
    item is a dict: ``chunk``, ``video`` (its place in the chunk), ``error`` (None, or why
    the video failed: its earlier pieces are void), ``restart`` (the video's earlier pieces
    are void, the plain decode's follow), and with frames ``frames`` ``[t, H, W, 3]`` uint8,
    ``indices``, ``times``, ``length``, ``fps``, ``last`` (the video's last piece).
    """

    def __init__(self, chunks: Sequence[Sequence[VideoEntry]], sampling: Sampling, piece: int):
        self.chunks, self.sampling, self.piece = [list(c) for c in chunks], sampling, piece

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for c in range(worker, len(self.chunks), workers):
            for v, entry in enumerate(self.chunks[c]):
                yield from self._pieces(c, v, entry.source)

    def _pieces(self, c: int, v: int, path) -> Iterator[dict]:
        base = {"chunk": c, "video": v, "error": None, "restart": False}
        last = False
        try:
            if not path.is_file():
                raise VideoDecodeError(f"{path} does not exist")
            for part in iter_frames(path, self.sampling, piece=self.piece):
                if part is RESTART:
                    yield {**base, "restart": True}
                else:
                    last = part.last
                    yield {**base, "frames": part.frames, "indices": part.indices, "times": part.times,
                           "length": part.length, "fps": part.fps, "last": part.last}
                del part  # not held while the next piece is decoded
        except Exception as e:  # noqa: BLE001 (a video must never stop the run; the reason is recorded)
            if not last:  # an error closing the file after the last piece changes nothing
                yield {**base, "error": str(e) if isinstance(e, VideoDecodeError) else
                       f"cannot decode {path}: {type(e).__name__}: {e}"}


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
        clip_model, _ = load_clip_of(cfg, device, precision)
        return cls(clip_model, cfg.clip_model, weights_id_of(cfg),
                   cfg.sampling(), Preprocess.from_model(clip_model), device, precision, cfg.batch_size,
                   default_workers() if cfg.num_workers is None else cfg.num_workers)

    @property
    def dim(self) -> int:
        visual = getattr(self.clip_model, "visual", None)
        dim = getattr(visual, "output_dim", None)
        if dim is None:
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
        return max(1, self.batch_size // self.piece_frames())

    def piece_frames(self) -> int:
        """Frames a decoded piece holds at most: a video's N frames (its whole), or under fps
        sampling :data:`FPS_FRAMES_GUESS`, never more than ``batch_size``."""
        return max(1, min(self.batch_size, self.sampling.num_frames or FPS_FRAMES_GUESS))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``[N, 3, h, w]`` -> raw image features ``[N, D]`` float32."""
        visual = self.clip_model.visual
        conv = getattr(visual, "conv1", None)  # open_clip keeps embeddings fp32 in half precision: ask the first layer
        dtype = conv.weight.dtype if conv is not None else next(p.dtype for p in visual.parameters() if p.dim() > 1)
        with torch.inference_mode():
            return self.clip_model.encode_image(pixels.to(dtype)).float()  # [N, D]

    def decoded(self, chunks: Sequence[Sequence[VideoEntry]]) -> DataLoader:
        """The decoded pieces of ``chunks`` (without empty chunks), from ``num_workers`` processes.

        Each worker has at most ``2 * videos_per_chunk()`` pieces queued (two chunks' worth of
        frames, ``2 * batch_size`` at most), so the frames held at full resolution stay within
        ``2 * batch_size`` per worker and two pieces (:meth:`piece_frames`) in this process,
        however long the videos are (docs/extraction.md, "Memory").
        """
        workers = self.num_workers
        return DataLoader(DecodedPieces([c for c in chunks if c], self.sampling, self.piece_frames()), batch_size=None,
                          num_workers=workers, prefetch_factor=2 * self.videos_per_chunk() if workers else None,
                          pin_memory=self.device.type == "cuda")

    def run(self, chunks: Sequence[Sequence[VideoEntry]]) -> Iterator[Extracted | Failed]:
        """Extract every video of ``chunks``, in order; one image-tower pass per ``batch_size`` frames of a chunk."""
        chunks = [list(c) for c in chunks if c]
        if not chunks:
            return
        try:
            yield from self.consume(chunks, self.decoded(chunks))
        except RuntimeError as e:
            if "DataLoader worker" in str(e):  # a decoder crashed its process (FFmpeg on a hostile file)
                raise VideoCoopError(f"a decoding worker died ({e}); the videos done so far are saved: rerun with "
                                     f"--num-workers 0 to see which video stops it") from e
            raise

    def consume(self, chunks: Sequence[Sequence[VideoEntry]], items: Iterable[dict]) -> Iterator[Extracted | Failed]:
        """Encode the decoded pieces of ``chunks`` (:meth:`decoded`), chunk by chunk:
        the frames of a chunk, in order, go through the image tower ``batch_size`` at a time,
        the same forwards however the chunks are shared out (ranks, workers, pieces), so the
        features are too. Yields each chunk's results when the chunk is done, in order."""
        chunks = [c for c in chunks if c]  # as decoded() numbers them
        open_chunks: dict[int, _Chunk] = {}
        done: dict[int, list[Extracted | Failed]] = {}
        emitted = 0
        for item in items:
            c = item["chunk"]
            chunk = open_chunks.setdefault(c, _Chunk(chunks[c]))
            if self._take(chunk, item):
                done[c] = self._finish(open_chunks.pop(c))
            while emitted in done:
                yield from done.pop(emitted)
                emitted += 1
        assert emitted == len(chunks) and not open_chunks, "a decoding worker stopped before its chunks were done"

    def _take(self, chunk: _Chunk, item: dict) -> bool:
        """One decoded piece into its chunk: preprocess it, encode every full forward; True when
        the chunk's last video is done."""
        v = item["video"]
        video = chunk.videos[v]
        if item["error"] is not None or item["restart"]:
            video.void(item["error"])
        else:
            video.length, video.fps = item["length"], item["fps"]
            video.indices += item["indices"]
            video.times += item["times"]
            frames = item.pop("frames")  # held here alone: freed once preprocessed
            crops = self.preprocess.resize_crop(frames.to(self.device, non_blocking=True))  # [t, 3, h, w] uint8
            del frames
            chunk.pending.append((v, video.generation, crops))
            chunk.queued += crops.shape[0]
            while chunk.queued >= self.batch_size:
                self._forward(chunk, self.batch_size)
        ended = item["error"] is not None or (not item["restart"] and item["last"])
        chunk.ended += ended
        return chunk.ended == len(chunk.videos)

    def _forward(self, chunk: _Chunk, n: int) -> None:
        """The next ``n`` queued frames of ``chunk`` through the image tower, to their videos."""
        taken, parts = 0, []
        while taken < n:
            v, generation, crops = chunk.pending[0]
            use = min(n - taken, crops.shape[0])
            parts.append((v, generation, crops[:use]))
            if use == crops.shape[0]:
                chunk.pending.pop(0)
            else:
                chunk.pending[0] = (v, generation, crops[use:])
            taken += use
        features = self.encode(self.preprocess.normalize(torch.cat([p[2] for p in parts]))).cpu()  # [n, D]
        chunk.queued -= n
        for (v, generation, crops), f in zip(parts, features.split([p[2].shape[0] for p in parts])):
            if generation == chunk.videos[v].generation:  # else the video restarted or failed since
                chunk.videos[v].features.append(f)

    def _finish(self, chunk: _Chunk) -> list[Extracted | Failed]:
        if chunk.queued:
            self._forward(chunk, chunk.queued)
        out = []
        for entry, video in zip(chunk.entries, chunk.videos):
            if video.error is not None:
                out.append(Failed(entry, video.error))
            else:
                out.append(Extracted(entry, torch.cat(video.features), video.indices, video.times, video.length, video.fps))
        return out


class _Video:
    """One video of a chunk while its pieces come in."""

    def __init__(self):
        self.features: list[torch.Tensor] = []  # [t, D] per piece encoded
        self.indices: list[int] = []
        self.times: list[float] = []
        self.length, self.fps = 0, 0.0
        self.error: str | None = None
        self.generation = 0  # bumped when the pieces so far are void

    def void(self, error: str | None) -> None:
        self.features, self.indices, self.times, self.error = [], [], [], error
        self.generation += 1


class _Chunk:
    """A chunk being encoded: its videos and the frames waiting for a full forward."""

    def __init__(self, entries: Sequence[VideoEntry]):
        self.entries = list(entries)
        self.videos = [_Video() for _ in self.entries]
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (video, generation, crops [t, 3, h, w])
        self.queued = 0  # frames in pending
        self.ended = 0  # videos whose last piece (or failure) came


__all__ = ["DecodedPieces", "Extracted", "Extractor", "Failed", "default_workers"]
