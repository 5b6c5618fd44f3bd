"""MPEG-4 Part 2 (Xvid, DivX: UCF101's and HMDB51's AVI files): how many pictures each packet codes.

The seeking decoder (:mod:`.decode`) takes a video's packets for its frames, one each. In
MPEG-4 Part 2 that holds only where the packets say so, which their VOP headers (ISO/IEC
14496-2, 6.2.5) tell without decoding:

* a *not-coded* VOP (an N-VOP, ``vop_coded`` = 0: Xvid's dropped frames, encoder-delay
  placeholders) is a packet FFmpeg's decoder shows no picture for: counting it as a frame
  shifts every later frame by one;
* DivX's *packed B-frames* put a reference VOP and the first B-VOP shown before it in one
  packet, each later B-VOP of the run one packet early, and an N-VOP placeholder after the
  run; FFmpeg shows each B-frame one packet late, so the run has as many packets as pictures;
* a packet of headers only (no VOP) shows nothing either.

:class:`PictureCount` reads the headers packet by packet: :meth:`~PictureCount.one_per_packet`
is True when every packet codes one picture or belongs to such a packed run. Anything it cannot
read (a missing VOL header, studio profile, a broken marker bit) counts as "cannot tell".
"""
from __future__ import annotations

START = b"\x00\x00\x01"
VOP = 0xB6
VOL_CODES = range(0x20, 0x30)  # video_object_layer_start_code
STUDIO_TYPES = (0x0E, 0x0F)  # simple and core studio profiles: another VOP syntax
EXTENDED_PAR = 0x0F
GRAYSCALE = 3
VBV_BITS = 79  # bit rate, buffer size and occupancy halves with their marker bits (6.2.3)


class _Bits:
    """Big-endian bits of ``data`` from byte ``start``; reading past the end raises IndexError."""

    def __init__(self, data: bytes, start: int):
        self.value = int.from_bytes(data[start:start + 24], "big")  # headers fit: a VOL needs < 20 bytes
        self.size, self.pos = 8 * len(data[start:start + 24]), 0

    def read(self, n: int) -> int:
        if self.pos + n > self.size:
            raise IndexError("header cut short")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)


def _time_increment_bits(data: bytes, start: int) -> int | None:
    """``vop_time_increment``'s width from a VOL header (6.2.3), as FFmpeg derives it; None: unreadable."""
    r = _Bits(data, start)
    r.read(1)  # random_accessible_vol
    if r.read(8) in STUDIO_TYPES:
        return None
    verid = 1
    if r.read(1):  # is_object_layer_identifier
        verid = r.read(4)
        r.read(3)  # priority
    if r.read(4) == EXTENDED_PAR:
        r.read(16)
    if r.read(1):  # vol_control_parameters
        r.read(3)  # chroma_format, low_delay
        if r.read(1):
            r.read(VBV_BITS)
    if r.read(2) == GRAYSCALE and verid != 1:
        r.read(4)  # shape extension
    if not r.read(1):  # marker
        return None
    resolution = r.read(16)
    return max(1, (resolution - 1).bit_length()) if resolution else None


def _vop_coded(data: bytes, start: int, time_bits: int) -> bool | None:
    """``vop_coded`` of the VOP whose header starts at ``start`` (after its start code); None: unreadable."""
    r = _Bits(data, start)
    r.read(2)  # vop_coding_type
    for _ in range(64):  # modulo_time_base: a second per 1
        if not r.read(1):
            break
    else:
        return None
    if not r.read(1):
        return None
    r.read(time_bits)
    if not r.read(1):
        return None
    return bool(r.read(1))


class PictureCount:
    """Pictures coded per packet of one MPEG-4 Part 2 stream, packet by packet.

    Args:
        extradata: the stream's codec extradata (MP4 keeps the VOL header there; AVI
            repeats it in the keyframes' packets).
    """

    def __init__(self, extradata: bytes | None = None):
        self.time_bits: int | None = None
        self.counts: list[int | None] = []
        if extradata:
            self._scan(bytes(extradata))

    def _scan(self, data: bytes) -> int | None:
        """The coded VOPs in ``data``, reading any VOL header on the way; None: cannot tell."""
        pictures, at = 0, data.find(START)
        try:
            while at >= 0 and at + 3 < len(data):
                code = data[at + 3]
                if code in VOL_CODES:
                    self.time_bits = _time_increment_bits(data, at + 4)
                elif code == VOP:
                    coded = None if self.time_bits is None else _vop_coded(data, at + 4, self.time_bits)
                    if coded is None:
                        return None
                    pictures += coded
                at = data.find(START, at + 4)
        except IndexError:
            return None
        return pictures

    def add(self, packet: bytes) -> None:
        self.counts.append(self._scan(packet))

    def one_per_packet(self) -> bool:
        """Every packet codes one picture, or packed runs do: two in one packet carry a picture
        over to the next packets until a packet with none (an N-VOP) takes it, one at most."""
        carry = 0
        for count in self.counts:
            if count is None:
                return False
            carry += count - 1
            if carry not in (0, 1):
                return False
        return carry == 0


__all__ = ["PictureCount"]
