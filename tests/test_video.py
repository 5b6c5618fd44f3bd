"""Decoding (seeking equals the plain decode), sampling, CLIP preprocessing on tensors vs open_clip's PIL."""
import functools

import av
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from videocoop.data import frame_indices
from videocoop.utils.errors import VideoCoopError
from tests.mpeg4_videos import frame_number, mpeg4_packets, not_coded, numbered_frames, packed, spying, write_avi
from videocoop.video import Preprocess, Sampling, VideoDecodeError, read_frames
from videocoop.video.decode import RESTART, fps_indices, iter_frames
from videocoop.video.mpeg4 import PictureCount
from videocoop.video.synthetic import encode_raw_h264, encode_video, pattern_frames

SAMPLINGS = [Sampling(4), Sampling(13), Sampling(20), Sampling(1), Sampling(num_frames=None, fps=3.0),
             Sampling(num_frames=None, fps=16.0)]


@functools.lru_cache(maxsize=None)
def _pixels(frames=13, height=48, width=64, seed=0) -> np.ndarray:
    return pattern_frames("spin", (50, 80, 230), frames, height, width, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """One short video per container/codec (MPEG-4 Part 2 with B-frames in MP4 and AVI, VP9 in WebM, H.264 with
    B-frames in MKV), a keyframe every 4 frames."""
    root = tmp_path_factory.mktemp("videos")
    return {suffix: encode_video(root / f"v{suffix}", _pixels(), fps=8) for suffix in (".mp4", ".avi", ".webm", ".mkv")}


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm", ".mkv"])
def test_seeking_decode_equals_plain_decode(videos, suffix):
    for sampling in SAMPLINGS:
        fast, plain = read_frames(videos[suffix], sampling), read_frames(videos[suffix], sampling, seek=False)
        assert fast.length == plain.length == 13
        assert fast.indices == plain.indices and fast.times == plain.times
        assert torch.equal(fast.frames, plain.frames), (suffix, sampling)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm", ".mkv"])
def test_pieces_put_together_are_the_whole(videos, suffix):
    """iter_frames' pieces (the extractor's unit) joined are read_frames' one piece, on both paths."""
    for sampling in SAMPLINGS:
        for seek in (True, False):
            whole = read_frames(videos[suffix], sampling, seek=seek)
            pieces = list(iter_frames(videos[suffix], sampling, piece=3, seek=seek))
            assert RESTART not in pieces and all(len(p.indices) == p.frames.shape[0] <= 3 for p in pieces)
            assert [p.last for p in pieces] == [False] * (len(pieces) - 1) + [True]
            assert [i for p in pieces for i in p.indices] == whole.indices, (suffix, sampling, seek)
            assert [t for p in pieces for t in p.times] == whole.times
            assert torch.equal(torch.cat([p.frames for p in pieces]), whole.frames)


def test_seeking_decodes_only_around_the_kept_frames(tmp_path, monkeypatch):
    path = encode_video(tmp_path / "long.mp4", _pixels(frames=96, height=16, width=16), fps=24, gop=8)
    counts = {"decoded": 0}
    monkeypatch.setattr("videocoop.video.decode.av.open", spying(counts))
    fast = read_frames(path, Sampling(4))
    seeking = counts["decoded"]
    counts["decoded"] = 0
    plain = read_frames(path, Sampling(4), seek=False)
    assert torch.equal(fast.frames, plain.frames) and fast.indices == frame_indices(96, 4).tolist()
    assert seeking <= 4 * 8 + 2  # at most a keyframe interval per kept frame (plus B-frame reordering)
    assert counts["decoded"] >= 96  # the plain path decodes the whole video


# --------------------------------------------------------------------------- AVI files of MPEG-4 Part 2

NUMBERED = 40  # frames of 64x48 at 25 fps, a keyframe every 12
DROPPED = (5, 17, 29)  # not keyframes
AVI_SAMPLINGS = [Sampling(4), Sampling(7), Sampling(8), Sampling(16), Sampling(NUMBERED), Sampling(1),
                 Sampling(num_frames=None, fps=10.0), Sampling(num_frames=None, fps=25.0)]


@pytest.fixture(scope="module")
def avi_files(tmp_path_factory):
    """``{kind: (path, the number each frame of a plain decode shows)}``: UCF101's kind of files
    (AVI, MPEG-4 Part 2 with B-frames), DivX's packed B-frames, and Xvid's dropped frames (a
    frame equal to the one before is stored as a not-coded VOP, which shows no picture)."""
    root = tmp_path_factory.mktemp("avi")
    frames, everyone = numbered_frames(NUMBERED), list(range(NUMBERED))
    files = {}
    for bframes in (1, 2, 3):
        packets = mpeg4_packets(frames, bframes=bframes)
        files[f"b-frames-{bframes}"] = (write_avi(root / f"b{bframes}.avi", [(d, k) for d, _, k in packets], 64, 48), everyone)
        files[f"packed-{bframes}"] = (write_avi(root / f"packed{bframes}.avi", packed(packets), 64, 48), everyone)
    repeated = frames.copy()
    for t in DROPPED:
        repeated[t] = repeated[t - 1]
    for bframes in (0, 2):
        packets = mpeg4_packets(repeated, bframes=bframes)
        assert not any(key for _, pts, key in packets if pts in DROPPED)
        chunks = [(not_coded(d) if pts in DROPPED else d, key) for d, pts, key in packets]
        files[f"dropped-{bframes}"] = (write_avi(root / f"dropped{bframes}.avi", chunks, 64, 48),
                                       [t for t in everyone if t not in DROPPED])
    return files


@pytest.mark.parametrize("kind", ["b-frames-1", "b-frames-2", "b-frames-3", "packed-1", "packed-2", "packed-3",
                                  "dropped-0", "dropped-2"])
def test_avi_mpeg4_samples_the_frames_a_plain_decode_shows(avi_files, kind):
    """Every frame shows its number: the plain decode shows the expected ones, and seeking
    gives the same frames (a not-coded frame counted as one would shift every later frame)."""
    path, shown = avi_files[kind]
    for sampling in AVI_SAMPLINGS:
        plain, fast = read_frames(path, sampling, seek=False), read_frames(path, sampling)
        assert plain.length == len(shown) and [frame_number(f) for f in plain.frames] == [shown[i] for i in plain.indices]
        assert (fast.length, fast.indices, fast.times) == (plain.length, plain.indices, plain.times), (kind, sampling)
        assert torch.equal(fast.frames, plain.frames), (kind, sampling)


def test_mpeg4_headers_tell_the_pictures_per_packet(avi_files):
    """Packed runs count as one picture a packet; a not-coded VOP does not; the packed file is one
    FFmpeg's own mpeg4_unpack_bframes bitstream filter unpacks to one VOP a packet (one B-frame
    runs: with longer ones the filter takes our tiny B-frames, <= 19 bytes, for N-VOPs)."""
    from av.bitstream import BitStreamFilterContext

    for kind, (path, _) in avi_files.items():
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            count = PictureCount(stream.codec_context.extradata)
            for packet in c.demux(stream):
                if packet.size:
                    count.add(bytes(packet))
        assert count.one_per_packet() == (not kind.startswith("dropped")), kind
        assert (2 in count.counts) == kind.startswith("packed"), kind
    with av.open(str(avi_files["packed-1"][0])) as c:
        stream = c.streams.video[0]
        unpack = BitStreamFilterContext("mpeg4_unpack_bframes", stream)
        out = [bytes(p) for packet in c.demux(stream) for p in unpack.filter(packet)] + [bytes(p) for p in unpack.filter(None)]
    unpacked = PictureCount()
    for data in out:
        unpacked.add(data)
    assert unpacked.counts == [1] * NUMBERED  # one VOP a packet, the N-VOPs gone


def test_seeking_checks_every_decoded_frame_against_the_packets(videos, monkeypatch):
    """A frame the packets list but the decoder never shows, decoded on the way to a kept frame
    but not kept itself: the check sees it and the plain path answers, also after pieces were
    given (RESTART)."""
    with av.open(str(videos[".mkv"])) as c:
        stream = c.streams.video[0]
        packets = sorted((p.pts, p.is_keyframe) for p in c.demux(stream) if p.size)
    kept = frame_indices(13, 4).tolist()
    missing = kept[-1] - 1  # decoded from the keyframe before the last kept frame, not kept
    assert missing not in kept and not packets[kept[-1]][1] and not packets[missing][1]
    monkeypatch.setattr("videocoop.video.decode.av.open", spying(drop_pts=packets[missing][0]))
    plain, fast = read_frames(videos[".mkv"], Sampling(4), seek=False), read_frames(videos[".mkv"], Sampling(4))
    assert plain.length == 12 and (fast.length, fast.indices) == (plain.length, plain.indices)
    assert torch.equal(fast.frames, plain.frames)
    pieces = list(iter_frames(videos[".mkv"], Sampling(12), piece=2))
    restart = pieces.index(RESTART)
    assert restart > 0 and [p.indices for p in pieces[restart + 1:]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    assert [p.last for p in pieces[restart + 1:]] == [False] * 5 + [True]


def test_frames_without_timestamps_are_timed_by_the_frame_rate(tmp_path):
    """A raw H.264 stream carries no timestamps (and cannot seek): frame n is at n / rate, the
    rate the stream itself gives (8 here, where FFmpeg's container default says 25)."""
    # the name says MPEG-TS; FFmpeg reads the content: raw H.264
    path = encode_raw_h264(tmp_path / "raw.ts", numbered_frames(20), fps=8)
    with av.open(str(path)) as c:
        assert all(f.time is None for f in c.decode(c.streams.video[0]))
    for sampling in (Sampling(4), Sampling(num_frames=None, fps=3.0)):
        for seek in (True, False):
            got = read_frames(path, sampling, seek=seek)
            assert got.length == 20 and got.fps == 8.0 and got.times == [i / 8 for i in got.indices]
            assert [frame_number(f) for f in got.frames] == got.indices


def test_avi_keyframes_are_sought_by_their_decoding_time(tmp_path, monkeypatch):
    """AVI's index holds decoding times, and with B-frames a keyframe is shown after it is
    decoded (pts 16, dts 13 here): seeking to its decoding time lands on it, where its
    presentation time landed on the next keyframe and sent the video to the plain path
    (decoding every frame twice)."""
    path = encode_video(tmp_path / "v.avi", pattern_frames("spin", (50, 80, 230), 60, 48, 64, np.random.default_rng(0)),
                        fps=25, gop=25)
    with av.open(str(path)) as c:
        assert any(p.dts < p.pts for p in c.demux(c.streams.video[0]) if p.size and p.is_keyframe and p.dts)
    counts = {"decoded": 0}
    monkeypatch.setattr("videocoop.video.decode.av.open", spying(counts))
    for sampling in (Sampling(4), Sampling(8), Sampling(num_frames=None, fps=2.0)):
        counts["decoded"] = 0
        fast = read_frames(path, sampling)
        assert 0 < counts["decoded"] <= 60, (sampling, counts)  # the plain path decodes 120
        assert torch.equal(fast.frames, read_frames(path, sampling, seek=False).frames)


def test_frames_are_rgb(tmp_path):
    """A red, a green and a blue video decode with the strong channel where it was encoded."""
    for channel in range(3):
        pixels = np.zeros((4, 32, 32, 3), np.uint8)
        pixels[..., channel] = 200
        path = encode_video(tmp_path / f"c{channel}.mp4", pixels)
        means = read_frames(path, Sampling(2)).frames.float().mean(dim=(0, 1, 2))  # [3]
        assert int(means.argmax()) == channel and means[channel] > 150, means


def test_segment_sampling_is_the_loaders_eval_sampling():
    for length in (1, 2, 7, 8, 13, 100):
        for n in (1, 3, 8, 16):
            assert Sampling(n).indices([i / 8 for i in range(length)]) == frame_indices(length, n).tolist()


def test_fps_sampling_keeps_the_frame_on_screen():
    times = [i / 8 for i in range(16)]  # 2 s at 8 fps
    assert fps_indices(times, 4.0) == list(range(0, 16, 2))
    assert fps_indices(times, 8.0) == list(range(16))
    assert fps_indices(times, 1.0) == [0, 8]
    assert fps_indices(times, 16.0) == [i // 2 for i in range(32)]  # faster than the video: frames repeat
    assert fps_indices([0.0], 2.0) == [0]


@given(st.lists(st.floats(0.01, 0.5), min_size=1, max_size=40), st.floats(0.2, 30.0))
def test_fps_sampling_is_ordered_and_in_range(gaps, fps):
    times = np.concatenate([[0.0], np.cumsum(gaps)]).tolist()
    idx = fps_indices(times, fps)
    assert idx[0] == 0 and all(0 <= i < len(times) for i in idx) and idx == sorted(idx)
    for k, i in enumerate(idx):  # each kept frame starts at or before its time, the next one after it
        assert times[i] <= k / fps + 1e-6 and (i + 1 == len(times) or times[i + 1] > k / fps - 1e-6)


def test_sampling_rejects_bad_values():
    for kwargs in (dict(num_frames=0), dict(num_frames=None), dict(num_frames=8, fps=2.0), dict(num_frames=None, fps=-1.0)):
        with pytest.raises(VideoCoopError):
            Sampling(**kwargs)
    with pytest.raises(VideoCoopError, match="method is one of"):
        Sampling.from_dict({"method": "random"})
    assert Sampling.from_dict(Sampling(num_frames=None, fps=2.5).to_dict()) == Sampling(num_frames=None, fps=2.5)


@pytest.mark.parametrize("kind", ["empty", "garbage", "text", "truncated", "no-frames"])
def test_undecodable_files_raise_a_decode_error_naming_them(tmp_path, videos, kind):
    path = tmp_path / f"bad-{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("this is not a video\n")
    elif kind == "truncated":
        path.write_bytes(videos[".mp4"].read_bytes()[:600])  # the index (moov) comes last: cut away
    else:
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=8)
            s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    with pytest.raises(VideoDecodeError, match=str(path.name)):
        read_frames(path, Sampling(4))


# --------------------------------------------------------------------------- preprocessing

#: Stated tolerance of the tensor preprocessing against open_clip's PIL preprocess: the
#: resized uint8 pixels differ by at most two levels (rounding; one when downscaling, the
#: usual case) on under 1% of pixels, so the normalised input by at most 2/255/min(std).
#: Measured on white noise, the worst case (docs/extraction.md, "Preprocessing").
PIXEL_LEVELS = 2
PIXELS_DIFFERING = 0.01
NORMALISED_TOL = 2 / 255 / 0.2613 + 1e-6
FEATURE_REL_TOL = 1e-3  # measured 1.1e-4 with ViT-B-32, 2e-4 with the tiny CLIP


def _pil_resized(pil, image: Image.Image) -> torch.Tensor:
    for t in pil.transforms:  # open_clip's resize and crop, stopping before ToTensor
        if type(t).__name__ in ("MaybeToTensor", "ToTensor", "Normalize"):
            break
        image = t(image)
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize("two_pass", [False, True], ids=["cpu-uint8", "device-two-pass"])
@pytest.mark.parametrize("size", [(48, 64), (64, 48), (33, 97), (240, 320), (32, 32), (17, 20)])
def test_tensor_preprocess_matches_open_clip_pil(size, two_pass, tiny_clip):
    """White noise (the worst case for rounding), through both resize paths: the CPU's uint8
    kernel and the two float passes other devices run."""
    clip, _ = tiny_clip
    for cfg in (Preprocess.from_model(clip), Preprocess((224, 224), (0.48145466, 0.4578275, 0.40821073),
                                                        (0.26862954, 0.26130258, 0.27577711))):
        pil = cfg.pil_transform()
        frames = torch.from_numpy(np.random.default_rng(sum(size)).integers(0, 256, (3, *size, 3), dtype=np.uint8))
        ours = cfg.normalize(cfg.resize_crop(frames, two_pass=two_pass))  # [3, 3, h, w]
        images = [Image.fromarray(f.numpy()) for f in frames]
        ref = torch.stack([pil(im) for im in images])
        assert ours.shape == ref.shape == (3, 3, *cfg.size)
        levels = (cfg.resize_crop(frames, two_pass).int() - torch.stack([_pil_resized(pil, im) for im in images]).int()).abs()
        assert int(levels.max()) <= PIXEL_LEVELS and float((levels > 0).float().mean()) < PIXELS_DIFFERING
        assert float((ours - ref).abs().max()) <= NORMALISED_TOL


def test_tensor_preprocess_gives_clips_features(tiny_clip):
    clip, _ = tiny_clip
    pre = Preprocess.from_model(clip)
    frames = torch.from_numpy(_pixels())  # [T, H, W, 3]
    images = [Image.fromarray(f.numpy()) for f in frames]
    with torch.no_grad():
        ours = clip.encode_image(pre(frames))
        ref = clip.encode_image(torch.stack([pre.pil_transform()(im) for im in images]))
    rel = (ours - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(rel.max()) <= FEATURE_REL_TOL




def test_preprocess_reads_the_models_config(tiny_clip):
    pre = Preprocess.from_model(tiny_clip[0])
    assert pre.size == (32, 32) and pre.interpolation == "bicubic" and pre.resize_mode == "shortest"
    assert pre.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    d = pre.to_dict()
    assert d["crop"] == "center" and d["channels"] == "RGB" and d["size"] == [32, 32]
    with pytest.raises(VideoCoopError, match="supported: shortest, squash"):
        Preprocess((32, 32), (0.5,) * 3, (0.5,) * 3, resize_mode="longest")


def test_synthetic_videos_are_the_same_bytes_on_every_run(tmp_path):
    from videocoop.video import synthesize_videos

    for run in ("a", "b"):
        for suffix in (".mp4", ".webm"):
            synthesize_videos(tmp_path / run / suffix[1:], n_classes=2, train_per_class=1, val_per_class=1, frames=4,
                              width=32, height=32, suffix=suffix)
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in sorted((tmp_path / "a").rglob("*.*"))}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in sorted((tmp_path / "b").rglob("*.*"))}
    assert len(a) == 8 and a == b
    means = {p.parent.name: read_frames(tmp_path / "a" / p, Sampling(2)).frames.float().mean(dim=(0, 1, 2))
             for p in a if p.suffix == ".mp4"}
    assert int(means["red_slide"].argmax()) == 0 and int(means["green_rise"].argmax()) == 1  # the classes' colours
