"""AVI files of MPEG-4 Part 2 video (what UCF101 and HMDB51 ship), written packet by packet with
PyAV, whose frames each show their own number: B-frames, DivX's packed B-frames, not-coded
frames (N-VOPs). The packets come from FFmpeg's own MPEG-4 encoder; a packed or not-coded
file rearranges or rewrites them as DivX and Xvid do, and the AVI muxer writes them.
:class:`SpyContainer` stands in for a decoder that counts or drops frames."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videocoop.video.synthetic import yuv420p

BITS = 8  # frame numbers 0..255
VOP = b"\x00\x00\x01\xb6"
USER_DATA = b"\x00\x00\x01\xb2"
DIVX_PACKED = b"DivX503b1393p"  # DivX 5.03's user data; the trailing 'p' says "packed bitstream"


class SpyContainer:
    """A PyAV container whose decoder counts the frames it gives in ``counts["decoded"]`` (when
    ``counts`` is given) and never shows the frame at ``drop_pts`` (an invisible or not-coded
    frame in a codec whose headers are not read: the plain decode has one frame fewer). Put it in
    place with ``monkeypatch.setattr("videocoop.video.decode.av.open", spying(...))``."""

    def __init__(self, container, counts: dict | None = None, drop_pts: int | None = None):
        self._c, self._counts, self._drop = container, counts, drop_pts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def __getattr__(self, name):
        return getattr(self._c, name)

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            if self._counts is not None:
                self._counts["decoded"] += 1
            if self._drop is None or frame.pts != self._drop:
                yield frame


def spying(counts: dict | None = None, drop_pts: int | None = None):
    """``av.open`` whose containers are :class:`SpyContainer` s."""
    real_open = av.open
    return lambda *a, **k: SpyContainer(real_open(*a, **k), counts, drop_pts)


def numbered_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 ``[n, height, width, 3]``: frame ``t`` shows ``t`` in binary, one white (1) or black (0)
    column per bit, wide enough (width / 8 pixels) to survive compression."""
    frames = np.empty((n, height, width, 3), np.uint8)
    column = width // BITS
    for t in range(n):
        frames[t] = (40, 90, 160)
        for b in range(BITS):
            frames[t, :, b * column:(b + 1) * column] = 255 if (t >> b) & 1 else 0
    return frames


def frame_number(picture) -> int:
    """The number a decoded RGB picture ``[H, W, 3]`` of :func:`numbered_frames` shows."""
    picture = np.asarray(picture)
    column = picture.shape[1] // BITS
    level = picture[4:-4].astype(np.float32).mean(axis=(0, 2))  # [W]
    return sum(1 << b for b in range(BITS) if level[b * column + 2:(b + 1) * column - 2].mean() > 128)


def mpeg4_packets(frames: np.ndarray, fps: int = 25, gop: int = 12, bframes: int = 2) -> list[tuple[bytes, int, bool]]:
    """FFmpeg's MPEG-4 Part 2 encoder's packets ``(bytes, pts, keyframe)`` in decoding order."""
    codec = av.CodecContext.create("mpeg4", "w")
    codec.width, codec.height, codec.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, fps), Fraction(fps)
    codec.gop_size, codec.bit_rate, codec.thread_count = gop, 4_000_000, 1
    codec.options = {"bf": str(bframes)}
    codec.open()
    packets = []
    for t, picture in enumerate([*frames, None]):
        frame = None
        if picture is not None:
            frame = av.VideoFrame.from_ndarray(yuv420p(picture), format="yuv420p")
            frame.pts, frame.time_base = t, Fraction(1, fps)
        packets += [(bytes(p), p.pts, p.is_keyframe) for p in codec.encode(frame)]
    return packets


def write_avi(path: Path, chunks: list[tuple[bytes, bool]], width: int, height: int, fps: int = 25) -> Path:
    """An AVI file holding ``chunks`` ``(bytes, keyframe)``, one per frame interval (AVI keeps no
    presentation times: FFmpeg reads them back from the headers)."""
    with av.open(str(path), "w", format="avi", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k, (data, keyframe) in enumerate(chunks):
            packet = av.Packet(data)
            packet.stream, packet.dts, packet.pts, packet.time_base = stream, k, k, Fraction(1, fps)
            packet.is_keyframe = keyframe
            container.mux(packet)
    return path


def not_coded(vop: bytes, time_bits: int = 5) -> bytes:
    """An N-VOP (``vop_coded`` = 0) with ``vop``'s type and time: a packet that shows no picture.
    ``time_bits``: the width of vop_time_increment (5 for a rate of 25)."""
    assert vop.startswith(VOP)
    bits = "".join(f"{b:08b}" for b in vop[4:12])
    end = 2  # vop_coding_type
    while bits[end] == "1":  # modulo_time_base
        end += 1
    end += 1 + 1 + time_bits + 1  # its 0, marker, vop_time_increment, marker
    header = bits[:end] + "0"  # vop_coded = 0
    header += "0" + "1" * ((8 - (len(header) + 1) % 8) % 8)  # stuffing to the byte
    return VOP + bytes(int(header[i:i + 8], 2) for i in range(0, len(header), 8))


def with_user_data(packet: bytes, text: bytes) -> bytes:
    """``packet`` with its user data (the encoder's name) replaced by ``text``."""
    start = packet.find(USER_DATA)
    end = packet.find(b"\x00\x00\x01", start + 4)
    return packet[:start] + USER_DATA + text + packet[end:]


def packed(packets: list[tuple[bytes, int, bool]]) -> list[tuple[bytes, bool]]:
    """DivX's packed B-frames: a reference frame with the first B-frame shown before it in one
    chunk, each later B-frame of the run one chunk early, an N-VOP after the run."""
    chunks, k = [], 0
    while k < len(packets):
        data, pts, key = packets[k]
        run = []
        while k + 1 + len(run) < len(packets) and packets[k + 1 + len(run)][1] < pts:
            run.append(packets[k + 1 + len(run)][0])  # B-frames, shown before this one
        if key:
            data = with_user_data(data, DIVX_PACKED)
        if run:
            chunks += [(data + run[0], key), *[(b, False) for b in run[1:]], (not_coded(run[-1]), False)]
        else:
            chunks.append((data, key))
        k += 1 + len(run)
    return chunks
