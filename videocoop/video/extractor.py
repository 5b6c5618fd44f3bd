"""The extractor: CLIP's image tower over videos (decode, sample, preprocess, encode).

The work: the video list (:mod:`.sources`) is cut into chunks of whole videos (about
``batch_size`` frames each); DataLoader workers decode chunks (:class:`DecodedVideos`:
:func:`videocoop.video.read_frames`, seeking to the kept frames) while the main process
preprocesses the previous chunk on the device and runs the image tower over it, a
forward spanning its videos. A chunk is encoded the same way whichever process takes
it, so the features do not depend on how the chunks are shared out.

:class:`Extractor` yields one :class:`Extracted` (or :class:`Failed`) per video;
:func:`videocoop.video.extract` writes them to a feature folder, and predict scores them.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..clip.loader import embed_dim, load_clip_of, weights_id_of
from ..utils.distributed import device_for, resolve_device, world_from_env
from ..utils.errors import VideoCoopError
from .decode import Sampling, VideoDecodeError, decoder_info, read_frames
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


class DecodedVideos(Dataset):
    """Item ``i``: the kept frames of video ``i``, or the reason it could not be decoded
    (a dict: ``i``, ``error``, and without an error ``frames`` ``[T, H, W, 3]`` uint8,
    ``indices``, ``times``, ``length``, ``fps``)."""

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
        except Exception as e:  # noqa: BLE001 (a video must never stop the run; the reason is recorded)
            return {"i": i, "error": f"cannot decode {path}: {type(e).__name__}: {e}"}
        return {"i": i, "error": None, "frames": f.frames, "indices": f.indices, "times": f.times,
                "length": f.length, "fps": f.fps}


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
        loader = DataLoader(DecodedVideos(flat, self.sampling), batch_sampler=batches, collate_fn=list,
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

__all__ = ["DecodedVideos", "Extracted", "Extractor", "Failed", "default_workers"]
