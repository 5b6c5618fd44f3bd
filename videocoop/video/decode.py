"""Video files to frames: decoding and frame sampling.

Decoding is PyAV's (FFmpeg inside its wheels, so ``pip install`` is the whole set-up).
A video's frames are its decoded frames in presentation order: frame ``i`` is the
``i``-th picture a plain decode of the file shows. :func:`read_frames` gets the sampled
ones without decoding the rest where it can: one demux pass (packets only, no decoding)
lists every frame's timestamp and the keyframes, then it seeks to the keyframe before
each wanted frame and decodes forward from there, converting only the frames it keeps.
That takes packets for frames, one each, so it is checked twice: MPEG-4 Part 2 packets
must each code one picture (:mod:`.mpeg4`: no N-VOPs; DivX's packed pairs count two), and
every frame the decoder gives must be the next packet in presentation order. Where
either fails, the plain path decodes every frame in order (``seek=False``); the tests
hold the two to equality. :func:`iter_frames` gives the kept frames in pieces as they
are decoded, so that a long video is never held whole.

CLIP's preprocessing of the frames is :mod:`videocoop.video.preprocess`.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch

from ..data.sampling import MAX_FRAMES
from ..utils.errors import VideoCoopError
from .mpeg4 import PictureCount

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


class FrameClock:
    """Each decoded frame's time in seconds from the first frame, fed the frames in order.

    A frame's time is its timestamp minus the first frame's (exactly, in the stream's time
    base, as the seeking path times packets). Raw streams (H.264 or MPEG-4 without a
    container) carry no timestamps: when the first frame has none, frame ``n`` is at
    ``n / rate``; a later frame without one comes one frame interval after the one before.
    ``rate`` is FFmpeg's guess of the frame rate (the stream's own timing, e.g. H.264's
    VUI, before the container's average). The extractor and the ``extraction-parity``
    audit both time frames with this clock.
    """

    def __init__(self, stream):
        self.rate = float(stream.guessed_rate or stream.average_rate or 1)
        self.n, self.first, self.last = 0, None, 0.0

    def __call__(self, frame) -> float:
        n, self.n = self.n, self.n + 1
        if n == 0:
            self.first = frame.pts
            t = 0.0
        elif self.first is None:
            t = n / self.rate
        elif frame.pts is not None:
            t = float((frame.pts - self.first) * (frame.time_base or Fraction(1, 1)))
        else:
            t = self.last + 1 / self.rate
        self.last = t
        return t


@dataclass
class Frames:
    """The kept frames of one video (or, from :func:`iter_frames`, a piece of them) and where they came from.

    ``frames`` is uint8 ``[T, H, W, 3]`` in RGB order; ``indices`` and ``times`` (seconds
    from the first frame) say which frames they are; ``length`` counts the video's frames.
    """

    frames: torch.Tensor  # [T, H, W, 3] uint8, RGB
    indices: list[int]
    times: list[float]
    length: int
    fps: float  # frames per second over the whole video (0 for one frame)
    last: bool = True  # the video's last piece (a whole video is one)


#: :func:`iter_frames` yields this when the pieces it gave so far are void: the seeking path
#: found the decoder disagreeing with the packets; the plain path's pieces follow.
RESTART = "restart"


class _Disagree(Exception):
    """The packets do not describe the decoded frames: use the plain path."""


def read_frames(path: str | os.PathLike, sampling: Sampling, *, seek: bool = True) -> Frames:
    """Decode the frames ``sampling`` keeps from one video file.

    Args:
        path: the video file.
        sampling: which frames.
        seek: demux once, then seek to the keyframe before each kept frame (decoding only
            from there), checking every decoded frame against the packets; False decodes
            every frame in order (the plain path).

    Raises:
        VideoDecodeError: the file cannot be opened or decoded, has no video stream or no
            frames; the message names the file.
    """
    parts: list[Frames] = []
    for part in iter_frames(path, sampling, seek=seek):
        parts = [] if part is RESTART else [*parts, part]
    if len(parts) == 1:
        return parts[0]
    return dataclasses.replace(parts[-1], frames=torch.cat([p.frames for p in parts]),
                               indices=[i for p in parts for i in p.indices], times=[t for p in parts for t in p.times])


def iter_frames(path: str | os.PathLike, sampling: Sampling, *, piece: int | None = None,
                seek: bool = True) -> Iterator[Frames | str]:
    """:func:`read_frames` in pieces of at most ``piece`` frames, each yielded as soon as it is
    decoded, so that a long video never sits in memory whole (None: one piece). It yields
    :data:`RESTART` when the seeking path fails a check after it gave pieces: those are
    void, the plain path's follow. Raises as :func:`read_frames`, also after some pieces."""
    if seek:
        given = False
        try:
            for part in _seeking(path, sampling, piece):
                given = True
                yield part
                del part  # not held while the next piece is decoded
            return
        except _Disagree:
            if given:
                yield RESTART
    yield from _plain(path, sampling, piece)


@contextlib.contextmanager
def _opened(path):
    """The container and its first video stream; PyAV's errors become :class:`VideoDecodeError` naming the file."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path} has no video stream")
            yield container, container.streams.video[0]
    except VideoDecodeError:  # a VideoCoopError is a ValueError: not PyAV's
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


class _Pieces:
    """Collects the kept frames, in order, into pieces of at most ``size``: each decoded frame
    is copied into its piece's array at once, so a piece's frames are held once."""

    def __init__(self, path, indices: list[int], times: list[float], size: int | None):
        self.path, self.indices, self.times, self.length = path, indices, times, len(times)
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        self.fps = (len(times) - 1) / span if span > 0 else 0.0
        self.size, self.k, self.start, self.buffer = size or len(indices), 0, 0, None

    @property
    def done(self) -> bool:
        return self.k == len(self.indices)

    @property
    def wanted(self) -> int:
        return self.indices[self.k]

    def add(self, i: int, array: np.ndarray) -> Iterator[Frames]:
        """Frame ``i`` decoded: it fills every kept place it has (short videos repeat frames)."""
        while not self.done and self.wanted == i:
            if self.buffer is None:
                self.start = self.k
                n = min(self.size, len(self.indices) - self.k)
                self.buffer = np.empty((n, *array.shape), np.uint8)  # [t, H, W, 3]
            elif array.shape != self.buffer.shape[1:]:
                raise VideoDecodeError(f"{self.path}: frames change size within the video "
                                       f"({self.buffer.shape[1:]} and {array.shape})")
            self.buffer[self.k - self.start] = array
            self.k += 1
            if self.k - self.start == len(self.buffer):
                kept = self.indices[self.start:self.k]
                buffer, self.buffer = self.buffer, None
                yield Frames(torch.from_numpy(buffer), kept, [self.times[j] for j in kept], self.length, self.fps,
                             last=self.done)
                del buffer  # the piece is the consumer's now: hold no reference while decoding the next


def _plain(path, sampling: Sampling, piece: int | None) -> Iterator[Frames]:
    """Every frame decoded in order, twice: once to count and time them, once to keep. The
    second pass opens the file again: raw streams cannot seek back."""
    with _opened(path) as (container, stream):
        clock = FrameClock(stream)
        times = [clock(frame) for frame in container.decode(stream)]
    if not times:
        raise VideoDecodeError(f"{path}: the video has no decodable frames")
    out = _Pieces(path, sampling.indices(times), times, piece)
    with _opened(path) as (container, stream):
        for n, frame in enumerate(container.decode(stream)):
            if n == out.wanted:
                yield from out.add(n, _rgb(frame))
            if out.done:
                return
    raise VideoDecodeError(f"{path}: a second decode gave fewer frames ({out.k} of {len(out.indices)} kept)")


def _packets(path, container, stream) -> tuple[list[int], list[int], dict[int, int]]:
    """Every packet's timestamp in presentation order, the keyframes', and each keyframe's
    decoding timestamp (AVI's index holds those: seeking by the presentation time can land
    on the next keyframe), from one demux pass, where the packets are the frames (else
    :class:`_Disagree`)."""
    pts, keyframes, seek_at = [], [], {}
    pictures = PictureCount(stream.codec_context.extradata) if stream.codec_context.name == "mpeg4" else None
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's flush packet
            continue
        if packet.pts is None:
            raise _Disagree
        pts.append(packet.pts)
        keyframes.append(packet.is_keyframe)
        if packet.is_keyframe:
            seek_at[packet.pts] = packet.pts if packet.dts is None else min(packet.dts, packet.pts)
        if pictures is not None:
            pictures.add(bytes(packet))
    if not pts:
        raise VideoDecodeError(f"{path}: the video has no frames")
    if pictures is not None and not pictures.one_per_packet():
        raise _Disagree  # MPEG-4 Part 2 packets that show no picture (N-VOPs) or two
    order = sorted(range(len(pts)), key=pts.__getitem__)
    if len({pts[i] for i in order}) != len(pts):
        raise _Disagree
    keys = [pts[i] for i in order if keyframes[i]] or [min(pts)]
    return [pts[i] for i in order], keys, seek_at


def _seeking(path, sampling: Sampling, piece: int | None) -> Iterator[Frames]:
    """Seek to the keyframe before each kept frame and decode forward from there. Every frame
    decoded must be the next packet in presentation order (none missing, none extra), else
    :class:`_Disagree`: a decoder that shows a frame per two packets (field pairs) or none
    for one (an invisible or not-coded frame) would shift the frames silently."""
    with _opened(path) as (container, stream):
        pts, key_pts, seek_at = _packets(path, container, stream)
        time_base = stream.time_base or Fraction(1, 1)
        times = [float((p - pts[0]) * time_base) for p in pts]
        out = _Pieces(path, sampling.indices(times), times, piece)
        position = {p: j for j, p in enumerate(pts)}
        decoder, after = None, None  # after: the position the decoder gives next
        while not out.done:
            i = out.wanted
            key = key_pts[max(bisect.bisect_right(key_pts, pts[i]) - 1, 0)]
            frame = None
            if after is not None and key <= pts[after - 1]:  # decoding, no keyframe ahead: go on
                frame, after = _decode_to(decoder, position, i, after)
            else:  # jump to the keyframe: by its presentation time, else by its decoding time (AVI's index)
                for at in dict.fromkeys((key, seek_at.get(key, key))):
                    container.seek(at, stream=stream, backward=True)
                    decoder = container.decode(stream)
                    frame, after = _decode_to(decoder, position, i, None)
                    if frame is not None:
                        break
            if frame is None:
                raise _Disagree
            yield from out.add(i, _rgb(frame))


def _decode_to(decoder, position: dict[int, int], i: int, after: int | None):
    """Decode up to the frame at position ``i``: ``(frame, the position after it)``, or
    ``(None, None)`` when the first frame after a seek (``after`` None) lies past it. Every
    frame must be the next packet (:class:`_Disagree`)."""
    for frame in decoder:
        j = position.get(frame.pts, -1)
        if j < 0 or (after is not None and j != after):
            raise _Disagree
        if after is None and j > i:
            return None, None  # the seek landed past the frame
        after = j + 1
        if j >= i:
            return frame, after
    raise _Disagree  # the decoder ended first
