"""videocoop extract: layouts, what the files hold, the fast paths against the plain one, resume, failures."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videocoop.cli import main
from videocoop.clip import TINY_MODEL
from videocoop.data import FeatureDataset, PackedFeatureDataset, frame_indices, load_feature_file, read_feature_info
from videocoop.utils.errors import VideoCoopError
from videocoop.utils.progress import Progress
from videocoop.video import (
    ExtractConfig,
    Extractor,
    Preprocess,
    Sampling,
    extract,
    find_videos,
    read_frames,
    synthesize_videos,
)
from videocoop.video.extract import FAILURES_FILE, RUN_FILE
from videocoop.video.sources import chunked

FRAMES = 3


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """SRC/{train,val}/<class>/*.mp4: two classes, 2 + 1 videos each, 7 frames of 64x48."""
    root = tmp_path_factory.mktemp("videos")
    synthesize_videos(root, n_classes=2, train_per_class=2, val_per_class=1, frames=7, width=64, height=48)
    return root


def cfg(src, out, **kw) -> ExtractConfig:
    kw = {"clip_model": TINY_MODEL, "num_frames": FRAMES, "num_workers": 0, "progress": "none", "batch_size": 64, **kw}
    return ExtractConfig(videos=str(src), out=str(out), **kw)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def feature_files(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(root).items() if k.endswith(".pt")}


# --------------------------------------------------------------------------- the video list


def _touch(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def test_class_is_the_folder_holding_the_video_and_splits_are_kept(tmp_path):
    _touch(tmp_path, "train/jump/a.mp4", "train/run/b.AVI", "val/jump/c.webm", "val/jump/notes.txt",
           "val/jump/.hidden.mp4", ".cache/x/y.mp4")
    root, entries = find_videos(tmp_path)
    assert root == tmp_path.resolve()
    assert [(e.split, e.label, e.out, e.rel) for e in entries] == [
        ("train", "jump", "jump/a.pt", "train/jump/a.mp4"), ("train", "run", "run/b.pt", "train/run/b.AVI"),
        ("val", "jump", "jump/c.pt", "val/jump/c.webm")]
    _, deep = find_videos(tmp_path / "train")  # the same videos, one level up: no split
    assert [(e.split, e.label) for e in deep] == [("", "jump"), ("", "run")]


@pytest.mark.parametrize("names,match", [
    (["a.mp4"], "outside a class folder"),
    (["jump/a.mp4", "jump/sub/b.mp4"], "would be read as a class"),
    (["jump/a.mp4", "train/run/b.mp4"], "would be read as a class"),
    (["jump/a.mp4", "jump/a.avi"], "would both write"),
    (["jump/notes.txt"], "no video files"),
])
def test_layouts_that_cannot_be_read_are_refused_by_name(tmp_path, names, match):
    _touch(tmp_path, *names)
    with pytest.raises(VideoCoopError, match=match):
        find_videos(tmp_path)


def test_manifest_rows(tmp_path):
    _touch(tmp_path, "clips/a.mp4", "clips/b.mp4")
    (tmp_path / "list.csv").write_text("path,label\nclips/b.mp4,run\nclips/a.mp4,jump\nclips/gone.mp4,jump\n")
    root, entries = find_videos(manifest=tmp_path / "list.csv")
    assert root == tmp_path.resolve() and [(e.label, e.out) for e in entries] == [
        ("jump", "jump/a.pt"), ("jump", "jump/gone.pt"), ("run", "run/b.pt")]
    (tmp_path / "bad.csv").write_text("path,label\nclips/a.mp4,\n")
    with pytest.raises(VideoCoopError, match="bad.csv, line 2: needs both a path and a label"):
        find_videos(manifest=tmp_path / "bad.csv")
    with pytest.raises(VideoCoopError, match="none of the 3 videos"):
        find_videos(tmp_path / "clips", manifest=tmp_path / "list.csv")


# --------------------------------------------------------------------------- what is written


def test_extract_writes_the_feature_folders_train_reads(src, tmp_path, tiny_clip):
    summary = extract(cfg(src, tmp_path))
    assert (summary.written, summary.skipped, summary.failed, summary.frames) == (6, 0, 0, 6 * FRAMES)
    assert summary.splits == [str(tmp_path / "train"), str(tmp_path / "val")]
    for split, per_class in (("train", 2), ("val", 1)):
        info = read_feature_info(tmp_path / split)
        assert info["clip_model"] == TINY_MODEL and info["weights"] == "random:0" and info["dim"] == 32
        assert info["sampling"] == {"method": "segment-middle", "num_frames": FRAMES} and info["num_frames"] == FRAMES
        assert info["preprocess"]["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
        assert info["preprocess"]["size"] == [32, 32] and info["preprocess"]["resize_mode"] == "shortest"
        assert info["decoder"]["name"] == "pyav" and info["source_root"] == str(src.resolve())
        assert info["dtype"] == "float16" and info["precision"] == "fp32"
        ds = FeatureDataset(tmp_path / split, dim=32)
        assert ds.classnames == ["green_rise", "red_slide"] and len(ds) == 2 * per_class
        for path, _ in ds.files:
            payload = torch.load(path, weights_only=True)
            assert payload["features"].dtype == torch.float16 and payload["features"].shape == (FRAMES, 32)
            assert (src / payload["source"]).is_file() and payload["num_source_frames"] == 7
            assert payload["frame_indices"] == frame_indices(7, FRAMES).tolist()
            assert payload["frame_times"] == [i / 8 for i in payload["frame_indices"]]
    assert not (tmp_path / FAILURES_FILE).exists() and (tmp_path / RUN_FILE).is_file()
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left


def test_features_equal_the_plain_path(src, tmp_path, tiny_clip):
    """Seeking, chunks spanning videos and batched preprocessing against one video at a time,
    decoded in full, in float32."""
    extract(cfg(src, tmp_path, dtype="float32"))
    clip, _ = tiny_clip
    pre = Preprocess.from_model(clip)
    _, entries = find_videos(src)
    for e in entries:
        frames = read_frames(e.source, Sampling(FRAMES), seek=False).frames
        with torch.no_grad():
            plain = clip.encode_image(pre(frames))  # [T, D]
        stored = load_feature_file(tmp_path / e.split / e.out)
        assert torch.allclose(stored, plain, rtol=0, atol=1e-5 * float(plain.abs().max())), e.rel


def test_float16_storage_error_is_within_its_tolerance(src, tmp_path):
    """float16 keeps 11 significant bits: relative error below 2^-11 per frame; measured 2.3e-4 (ViT-B-32)."""
    extract(cfg(src, tmp_path / "16"))
    extract(cfg(src, tmp_path / "32", dtype="float32"))
    for name in feature_files(tmp_path / "32"):
        a, b = load_feature_file(tmp_path / "16" / name), load_feature_file(tmp_path / "32" / name)
        assert float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max()) < 2 ** -11


def test_decoding_workers_give_the_same_files(src, tmp_path):
    extract(cfg(src, tmp_path / "main"))
    extract(cfg(src, tmp_path / "workers", num_workers=1))
    assert feature_files(tmp_path / "main") == feature_files(tmp_path / "workers")


def test_chunks_hold_whole_videos_of_about_a_batch():
    pre = Preprocess((32, 32), (0.5,) * 3, (0.5,) * 3)
    ex = Extractor(None, "x", "random:0", Sampling(8), pre, torch.device("cpu"), batch_size=128)
    assert ex.videos_per_chunk() == 16
    assert [len(c) for c in chunked(list(range(37)), 16)] == [16, 16, 5]


def test_fps_sampling_and_packed_output(src, tmp_path):
    summary = extract(cfg(src, tmp_path, num_frames=None, fps=4.0, packed=True))
    assert summary.splits == [str(tmp_path / "train"), str(tmp_path / "val")]
    packed = PackedFeatureDataset(tmp_path / "train")
    per_file = FeatureDataset(tmp_path / "per-file" / "train")
    assert packed.lengths == per_file.lengths == [4] * 4  # 7 frames at 8 fps = 0.875 s: 4 frames at 4 fps
    assert packed.info["sampling"] == {"method": "fps", "fps": 4.0} and packed.info["num_frames"] is None
    for i in range(len(packed)):
        assert torch.equal(packed[i].features, per_file[i].features)
    payload = torch.load(per_file.files[0][0], weights_only=True)
    assert payload["frame_indices"] == [0, 2, 4, 6]


def test_fps_extraction_holds_a_bounded_number_of_frames(tmp_path, tiny_clip, monkeypatch):
    """--fps keeps every frame of a long video: the frames held at full resolution at once stay
    within the stated bound (two pieces without workers: the one being decoded, the one being
    preprocessed), not the video's length. Measured by tracemalloc's peak, with every decoded
    frame a numpy copy so that it counts (PyAV's own arrays live in FFmpeg's memory)."""
    import tracemalloc

    from videocoop.video import decode
    from videocoop.video.extractor import FPS_FRAMES_GUESS
    from videocoop.video.synthetic import encode_video, pattern_frames

    frames, height, width = 96, 240, 320
    encode_video(tmp_path / "src" / "long" / "a.mp4", pattern_frames("slide", (220, 40, 40), frames, height, width,
                                                                     np.random.default_rng(0)), fps=8)
    _, entries = find_videos(tmp_path / "src")
    clip, _ = tiny_clip
    ex = Extractor(clip, TINY_MODEL, "random:0", Sampling(num_frames=None, fps=8.0), Preprocess.from_model(clip),
                   torch.device("cpu"), batch_size=32, num_workers=0)
    real_rgb = decode._rgb
    monkeypatch.setattr(decode, "_rgb", lambda frame: real_rgb(frame).copy())
    frame_bytes = height * width * 3
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        (result,) = list(ex.run([entries]))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak <= 2 * FPS_FRAMES_GUESS * frame_bytes, peak / frame_bytes  # measured: 21.7 (197 before: every frame twice)
    assert result.features.shape == (frames, 32) and result.indices == list(range(frames))
    assert ex.piece_frames() == FPS_FRAMES_GUESS
    plain = read_frames(tmp_path / "src" / "long" / "a.mp4", Sampling(num_frames=None, fps=8.0), seek=False)
    with torch.no_grad():  # the pieces' features (6 pieces, 3 forwards of 32) against the whole video's in one
        expected = clip.encode_image(Preprocess.from_model(clip)(plain.frames))  # [T, D]
    assert torch.allclose(result.features, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_a_video_whose_decoder_disagrees_midway_gets_the_plain_paths_frames(tmp_path, tiny_clip, monkeypatch):
    """Seeking hands pieces over, then finds a frame the decoder does not show: the pieces so far
    are void (RESTART) and the video's features are the plain decode's."""
    import av

    from tests.mpeg4_videos import spying
    from videocoop.video.synthetic import encode_video, pattern_frames

    path = encode_video(tmp_path / "src" / "c" / "a.mkv", pattern_frames("spin", (50, 80, 230), 40, 48, 64,
                                                                          np.random.default_rng(0)), fps=8)
    with av.open(str(path)) as c:
        missing = sorted(p.pts for p in c.demux(c.streams.video[0]) if p.size)[20]
    monkeypatch.setattr("videocoop.video.decode.av.open", spying(drop_pts=missing))
    _, entries = find_videos(tmp_path / "src")
    clip, _ = tiny_clip
    pre = Preprocess.from_model(clip)
    ex = Extractor(clip, TINY_MODEL, "random:0", Sampling(num_frames=None, fps=8.0), pre, torch.device("cpu"),
                   batch_size=4, num_workers=0)
    from videocoop.video.decode import RESTART, iter_frames

    assert RESTART in list(iter_frames(path, Sampling(num_frames=None, fps=8.0), piece=ex.piece_frames()))
    (result,) = list(ex.run([entries]))
    plain = read_frames(path, Sampling(num_frames=None, fps=8.0), seek=False)
    assert plain.length == 39 and (result.indices, result.times, result.length) == (plain.indices, plain.times, 39)
    with torch.no_grad():
        expected = clip.encode_image(pre(plain.frames))  # [T, D]
    assert torch.allclose(result.features, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_plain_progress_prints_at_chunk_ends_on_stderr(capsys):
    """Off a terminal (pytest's stderr), auto is plain: a line when a chunk's videos are all
    done (every=0: at each such end) and at the last video; stdout stays free for data."""
    bar = Progress("auto", 5, "extract", every=0.0, chunks=[[1, 2], [3, 4], [5]])
    for frames in (3, 3, 0, 3, 3):
        bar.advance(frames)
    bar.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert [line.split(",")[0] for line in err.splitlines()] == ["extract: 2/5 videos", "extract: 4/5 videos",
                                                                 "extract: 5/5 videos"]
    assert "frames/s" in err


# --------------------------------------------------------------------------- resume and failures


class _StopAfterFirstChunk(Extractor):
    """Stands for Ctrl-C or kill -9 between two chunks."""

    def run(self, chunks):
        for n, result in enumerate(super().run(chunks[:1])):
            yield result
        raise KeyboardInterrupt


def test_a_stopped_run_resumes_to_the_same_files(src, tmp_path, tiny_clip):
    clean = tmp_path / "clean"
    extract(cfg(src, clean, batch_size=2 * FRAMES))  # chunks of two videos
    out = tmp_path / "stopped"
    base = Extractor.from_config(cfg(src, out, batch_size=2 * FRAMES), torch.device("cpu"))
    stopper = _StopAfterFirstChunk(**{k: getattr(base, k) for k in base.__dataclass_fields__})
    with pytest.raises(KeyboardInterrupt):
        extract(cfg(src, out, batch_size=2 * FRAMES), stopper)
    assert len(feature_files(out)) == 2 and not (out / "train" / "features.json").exists()
    (out / "val" / "red_slide").mkdir(parents=True)
    (out / "val" / "red_slide" / ".red_slide_val00.pt.tmp").write_bytes(b"torn write")  # kill -9 mid-write
    summary = extract(cfg(src, out, batch_size=2 * FRAMES))
    assert (summary.written, summary.skipped) == (4, 2)
    assert feature_files(out) == feature_files(clean)
    assert extract(cfg(src, out, batch_size=2 * FRAMES)).skipped == 6
    assert extract(cfg(src, out, batch_size=2 * FRAMES, overwrite=True)).written == 6


def test_a_rerun_with_other_settings_is_refused_unless_overwriting(src, tmp_path):
    extract(cfg(src, tmp_path))
    with pytest.raises(VideoCoopError, match=r"other settings \(sampling: .* pass --overwrite"):
        extract(cfg(src, tmp_path, num_frames=4))
    assert extract(cfg(src, tmp_path, num_frames=4, overwrite=True)).written == 6


def test_undecodable_videos_are_recorded_and_skipped(src, tmp_path, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(src / "train", videos)
    (videos / "red_slide" / "empty.mp4").write_bytes(b"")
    (videos / "red_slide" / "text.avi").write_text("not a video\n")
    (videos / "green_rise" / "cut.mp4").write_bytes((videos / "green_rise" / "green_rise_train00.mp4").read_bytes()[:500])
    out = tmp_path / "out"
    code = main(["extract", "--videos", str(videos), "--out", str(out), "--clip-model", TINY_MODEL,
                 "--num-frames", str(FRAMES), "--num-workers", "0", "--progress", "none"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err + captured.out
    assert "extract: 4 written, 0 skipped as done, 3 failed (see" in captured.out
    failures = [json.loads(line) for line in (out / FAILURES_FILE).read_text().splitlines()]
    assert [f["source"] for f in failures] == ["green_rise/cut.mp4", "red_slide/empty.mp4", "red_slide/text.avi"]
    assert all(f["error"] and f["path"] for f in failures)
    assert len(FeatureDataset(out)) == 4
    for name in ("empty.mp4", "text.avi"):
        (videos / "red_slide" / name).unlink()
    (videos / "green_rise" / "cut.mp4").unlink()
    assert main(["extract", "--videos", str(videos), "--out", str(out), "--clip-model", TINY_MODEL,
                 "--num-frames", str(FRAMES), "--num-workers", "0", "--progress", "none"]) == 0
    assert "0 written, 4 skipped as done, 0 failed" in capsys.readouterr().out
    assert not (out / FAILURES_FILE).exists()  # the old list no longer holds


def _held(root: Path) -> dict[str, int]:
    """Every feature file under ``root`` (hidden folders and the user's runs/ aside) and its frame count."""
    return {p.relative_to(root).as_posix(): load_feature_file(p).shape[0] for p in sorted(root.rglob("*.pt"))
            if not any(part.startswith(".") or part == "runs" for part in p.relative_to(root).parts)}


@pytest.mark.parametrize("packed", [False, True], ids=["per-file", "packed"])
def test_overwrite_leaves_exactly_what_features_json_describes(src, tmp_path, packed):
    """Re-extraction with other settings after a source was deleted, another replaced by a
    corrupt file and a whole class removed: the old files of those videos go (they would mix
    4-frame features into a 6-frame folder), the failure is recorded, the user's own files stay."""
    videos = tmp_path / "videos"
    shutil.copytree(src, videos)
    shutil.copytree(src / "train" / "red_slide", videos / "train" / "blue spin")  # a third class, removed below
    out = tmp_path / "out"
    extract(cfg(videos, out, num_frames=4, packed=packed))
    feature_root = out / "per-file" if packed else out
    assert set(_held(feature_root).values()) == {4} and len(_held(feature_root)) == 8
    (out / "notes.txt").write_text("mine\n")
    (out / "runs" / "r1").mkdir(parents=True)
    torch.save({"mine": 1}, out / "runs" / "r1" / "checkpoint.pt")
    (videos / "train" / "red_slide" / "red_slide_train00.mp4").unlink()
    (videos / "train" / "green_rise" / "green_rise_train01.mp4").write_bytes(b"not a video any more")
    shutil.rmtree(videos / "train" / "blue spin")
    summary = extract(cfg(videos, out, num_frames=6, packed=packed, overwrite=True))
    assert (summary.written, summary.failed) == (4, 1)
    assert _held(feature_root) == {"train/green_rise/green_rise_train00.pt": 6, "train/red_slide/red_slide_train01.pt": 6,
                                   "val/green_rise/green_rise_val00.pt": 6, "val/red_slide/red_slide_val00.pt": 6}
    assert not (feature_root / "train" / "blue spin").exists()
    failures = [json.loads(line) for line in (out / FAILURES_FILE).read_text().splitlines()]
    assert [f["source"] for f in failures] == ["train/green_rise/green_rise_train01.mp4"]
    train = PackedFeatureDataset(out / "train") if packed else FeatureDataset(out / "train")
    assert train.classnames == ["green_rise", "red_slide"] and train.lengths == [6, 6]
    assert read_feature_info(out / "train")["num_frames"] == 6
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "runs" / "r1" / "checkpoint.pt").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # nothing set aside is left
    again = extract(cfg(videos, out, num_frames=6, packed=packed))  # a rerun: the done videos are skipped
    assert (again.written, again.skipped, again.failed) == (0, 4, 1)


def test_a_stopped_overwrite_resumes_without_old_files(src, tmp_path):
    """An --overwrite run stopped after its first chunk, rerun without --overwrite: the videos it
    had not redone are not taken for done (their old files were set aside, not left in place)."""
    out = tmp_path / "out"
    extract(cfg(src, out, batch_size=2 * FRAMES))
    new = cfg(src, out, num_frames=FRAMES + 1, batch_size=2 * (FRAMES + 1))
    base = Extractor.from_config(new, torch.device("cpu"))
    stopper = _StopAfterFirstChunk(**{k: getattr(base, k) for k in base.__dataclass_fields__})
    with pytest.raises(KeyboardInterrupt):
        extract(dataclasses.replace(new, overwrite=True), stopper)
    assert set(_held(out).values()) == {FRAMES + 1} and len(_held(out)) == 2  # the old ones are aside
    summary = extract(new)
    assert (summary.written, summary.skipped) == (4, 2)
    clean = tmp_path / "clean"
    extract(cfg(src, clean, num_frames=FRAMES + 1, batch_size=2 * (FRAMES + 1)))
    assert feature_files(out) == feature_files(clean)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("argv,match", [
    (["--num-frames", "4", "--fps", "2"], "not allowed with argument"),
    (["--precision", "fp8"], "invalid choice"),
    (["--num-frames", "0"], "num_frames must be an integer from 1 to 10000"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
])
def test_bad_flags_are_usage_errors(src, tmp_path, capsys, argv, match):
    code = main(["extract", "--videos", str(src), "--out", str(tmp_path), "--clip-model", TINY_MODEL, *argv])
    assert code == 2 and match in capsys.readouterr().err


def test_missing_source_is_a_usage_error(tmp_path, capsys):
    assert main(["extract", "--videos", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- torchrun


def test_torchrun_two_processes_write_the_same_files_as_one(src, tmp_path):
    """Two CPU ranks (gloo), each taking every other chunk, against one process: bit for bit;
    and again after an --overwrite with a source gone (rank 0 sets the old files aside
    between two barriers)."""
    videos = tmp_path / "videos"
    shutil.copytree(src, videos)
    flags = ["--videos", str(videos), "--clip-model", TINY_MODEL, "--batch-size", str(2 * FRAMES), "--num-workers", "0",
             "--progress", "none"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")

    def both(*extra: str) -> subprocess.CompletedProcess:
        assert main(["extract", "--out", str(tmp_path / "one"), *flags, *extra]) == 0
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "videocoop", "extract", "--out", str(tmp_path / "two"), *flags, *extra],
                              capture_output=True, text=True, env=env, timeout=300)

    run = both("--num-frames", str(FRAMES))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("extract: 6 written, 0 skipped as done, 0 failed") == 1  # rank 0 speaks for all
    assert files(tmp_path / "two") == files(tmp_path / "one")
    (videos / "train" / "red_slide" / "red_slide_train00.mp4").unlink()
    run = both("--num-frames", str(FRAMES + 1), "--overwrite")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("extract: 5 written, 0 skipped as done, 0 failed") == 1
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert set(_held(tmp_path / "two").values()) == {FRAMES + 1} and len(_held(tmp_path / "two")) == 5
