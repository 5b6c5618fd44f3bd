"""Video files to frames: decoding and frame sampling.

Decoding is PyAV's (FFmpeg inside its wheels, so ``pip install`` is the whole set-up).
A video's frames are its decoded frames in presentation order: frame ``i`` is the
``i``-th picture a plain decode of the file shows. :func:`read_frames` gets the sampled
ones without decoding the rest where it can: one demux pass (packets only, no decoding)
lists every frame's timestamp and the keyframes, then it seeks to the keyframe before
each wanted frame and decodes forward from there, converting only the frames it keeps.
:func:`read_frames` with ``seek=False`` is the plain path (decode everything, in order);
the tests hold the two to equality, and the seeking path falls back to the plain one
when a file's packets and frames disagree.

CLIP's preprocessing of the frames is :mod:`videocoop.video.preprocess`.
"""
from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch

from ..data.sampling import MAX_FRAMES
from ..utils.errors import VideoCoopError

SAMPLING_METHODS = ("segment-middle", "fps")
MAX_FPS = 1000  # frames per second past any video's rate: a typo, whose frame list would not fit in memory


class VideoDecodeError(VideoCoopError):
    """A video that cannot be decoded: corrupt, truncated, no video stream, no frames."""


def decoder_info() -> dict:
    """The decoder recorded in ``features.json``: PyAV's version and the FFmpeg it bundles."""
    codec = ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))
    return {"name": "pyav", "version": av.__version__, "libavcodec": codec}


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Sampling:
    """Which frames of a video are kept.

    Exactly one of:

    * ``num_frames``: the middle frame of ``num_frames`` equal segments, i.e.
      ``videocoop.data.frame_indices(length, num_frames)``, the loader's
      evaluation sampling (short videos repeat frames);
    * ``fps``: every frame at ``fps`` frames per second: the frame on screen at times
      ``0, 1/fps, 2/fps, ...`` before the video ends (variable T; training masks it).
    """

    num_frames: int | None = 8  # 8: CoOp-for-video papers' common choice (Efficient-Prompt, ViFi-CLIP)
    fps: float | None = None  # None: sample by num_frames

    def __post_init__(self):
        if (self.num_frames is None) == (self.fps is None):
            raise VideoCoopError(f"sample by num_frames or by fps, exactly one; got num_frames={self.num_frames}, fps={self.fps}")
        if self.num_frames is not None and (not isinstance(self.num_frames, int) or isinstance(self.num_frames, bool)
                                            or not 1 <= self.num_frames <= MAX_FRAMES):
            raise VideoCoopError(f"num_frames must be an integer from 1 to {MAX_FRAMES}, got {self.num_frames!r}")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps)
                                         and 0 < self.fps <= MAX_FPS):
            raise VideoCoopError(f"fps must be a number above 0 and at most {MAX_FPS}, got {self.fps!r}")

    @property
    def method(self) -> str:
        return "segment-middle" if self.num_frames is not None else "fps"

    def indices(self, times: Sequence[float]) -> list[int]:
        """The kept frames' indices, given every frame's time in seconds from the first."""
        length = len(times)
        if length == 0:
            raise VideoDecodeError("the video has no frames")
        if self.num_frames is not None:
            from ..data.sampling import frame_indices  # the loader's own definition, not a copy of it

            return frame_indices(length, self.num_frames).tolist()
        return fps_indices(times, self.fps)

    def to_dict(self) -> dict:
        if self.num_frames is not None:
            return {"method": "segment-middle", "num_frames": self.num_frames}
        return {"method": "fps", "fps": self.fps}

    @classmethod
    def from_dict(cls, d: dict) -> Sampling:
        """The inverse of :meth:`to_dict` (``features.json``'s ``sampling``)."""
        method = d.get("method") if isinstance(d, dict) else None
        if method == "segment-middle":
            return cls(num_frames=d.get("num_frames"))
        if method == "fps":
            return cls(num_frames=None, fps=d.get("fps"))
        raise VideoCoopError(f"unknown sampling {d!r}; the method is one of {', '.join(SAMPLING_METHODS)}")

    def describe(self) -> str:
        return f"{self.num_frames} frames (segment middles)" if self.num_frames is not None else f"{self.fps:g} frames/s"


def video_duration(times: Sequence[float]) -> float:
    """Seconds from the first frame to the end of the last: its start plus the typical
    frame interval (the median gap; 0 for a one-frame video)."""
    if len(times) < 2:
        return 0.0
    gaps = np.diff(np.asarray(times, dtype=np.float64))
    return float(times[-1] + np.median(gaps))


def fps_indices(times: Sequence[float], fps: float) -> list[int]:
    """The frame on screen at each of ``0, 1/fps, 2/fps, ...`` before the video's end."""
    t = np.asarray(times, dtype=np.float64)
    count = max(1, math.ceil(video_duration(times) * fps - 1e-9))
    at = np.arange(count, dtype=np.float64) / fps  # [count]
    idx = np.searchsorted(t, at + 1e-9, side="right") - 1  # the last frame starting at or before each time
    return np.clip(idx, 0, len(t) - 1).tolist()


# --------------------------------------------------------------------------- decoding


@dataclass
class Frames:
    """The kept frames of one video and where they came from.

    ``frames`` is uint8 ``[T, H, W, 3]`` in RGB order; ``indices`` and ``times`` (seconds
    from the first frame) say which frames they are; ``length`` counts the video's frames.
    """

    frames: torch.Tensor  # [T, H, W, 3] uint8, RGB
    indices: list[int]
    times: list[float]
    length: int
    fps: float  # frames per second over the whole video (0 for one frame)


class _Disagree(Exception):
    """The packets' timestamps do not describe the decoded frames: use the plain path."""


def read_frames(path: str | os.PathLike, sampling: Sampling, *, seek: bool = True) -> Frames:
    """Decode the frames ``sampling`` keeps from one video file.

    Args:
        path: the video file.
        sampling: which frames.
        seek: demux once, then seek to the keyframe before each kept frame (decoding only
            from there); False decodes every frame in order (the plain path).

    Raises:
        VideoDecodeError: the file cannot be opened or decoded, has no video stream or no
            frames; the message names the file.
    """
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path} has no video stream")
            stream = container.streams.video[0]
            if seek:
                try:
                    return _read_seeking(container, stream, sampling)
                except _Disagree:
                    container.seek(0)  # start over on the plain path
            return _read_plain(container, stream, sampling)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError, RuntimeError, MemoryError) as e:
        raise VideoDecodeError(f"cannot decode {path}: {type(e).__name__}: {e}{_what_it_is(path)}") from e


def _what_it_is(path: str | os.PathLike) -> str:
    """What a file that is not a video is, where its first bytes tell (a web page saved under a
    video's name, by a download that got the page instead of the video)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    except OSError:
        return ""
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        return " (it is an HTML page, not a video: a download that saved the web page; download the video itself)"
    return " (it is empty)" if not head else ""


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")  # [H, W, 3]; FFmpeg's own YUV -> RGB conversion


def _frames_from_arrays(arrays: dict[int, np.ndarray], indices: list[int], times: list[float], length: int) -> Frames:
    """The :class:`Frames` of the kept frames: ``arrays`` maps a frame index to its RGB
    array, ``times`` holds every frame's time, ``length`` counts the video's frames."""
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise VideoDecodeError(f"frames change size within the video ({sorted(shapes)})")
    frames = torch.from_numpy(np.stack([arrays[i] for i in indices]))  # [T, H, W, 3]
    span = times[-1] - times[0] if length > 1 else 0.0
    fps = (length - 1) / span if span > 0 else 0.0
    return Frames(frames, list(indices), [times[i] for i in indices], length, fps)


def _read_plain(container, stream, sampling: Sampling) -> Frames:
    """Every frame decoded in order (twice: once to count and time them, once to keep)."""
    rate = float(stream.average_rate or 1)
    stamps = []
    for n, frame in enumerate(container.decode(stream)):
        stamps.append(frame.time if frame.time is not None else n / rate)
    if not stamps:
        raise VideoDecodeError("the video has no decodable frames")
    times = [t - stamps[0] for t in stamps]
    indices = sampling.indices(times)
    wanted = set(indices)
    container.seek(0)
    arrays = {}
    for n, frame in enumerate(container.decode(stream)):
        if n in wanted:
            arrays[n] = _rgb(frame)
        if n >= max(wanted):
            break
    if len(arrays) != len(wanted):
        raise VideoDecodeError(f"a second decode gave fewer frames ({len(arrays)} of {len(wanted)} kept)")
    return _frames_from_arrays(arrays, indices, times, len(times))


def _read_seeking(container, stream, sampling: Sampling) -> Frames:
    pts, keyframes = [], []
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's flush packet
            continue
        if packet.pts is None:
            raise _Disagree
        pts.append(packet.pts)
        keyframes.append(packet.is_keyframe)
    if not pts:
        raise VideoDecodeError("the video has no frames")
    order = sorted(range(len(pts)), key=pts.__getitem__)
    pts = [pts[i] for i in order]  # presentation order
    if len(set(pts)) != len(pts):
        raise _Disagree
    key_pts = [pts[j] for j, i in enumerate(order) if keyframes[i]] or [pts[0]]
    time_base = stream.time_base or Fraction(1, 1)
    times = [float((p - pts[0]) * time_base) for p in pts]
    indices = sampling.indices(times)
    wanted = {pts[i]: i for i in indices}
    arrays: dict[int, np.ndarray] = {}
    decoder, last = None, None
    for target in sorted(wanted):
        if wanted[target] in arrays:
            continue
        key = key_pts[max(bisect.bisect_right(key_pts, target) - 1, 0)]
        if decoder is None or last is None or key > last:  # a keyframe lies ahead: jump to it
            container.seek(key, stream=stream, backward=True)
            decoder = container.decode(stream)
        for frame in decoder:
            if frame.pts is None:
                raise _Disagree
            last = frame.pts
            if frame.pts in wanted:
                arrays[wanted[frame.pts]] = _rgb(frame)
            if frame.pts >= target:
                break
        if wanted[target] not in arrays:
            raise _Disagree
    return _frames_from_arrays(arrays, indices, times, len(pts))

