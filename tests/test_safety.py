"""Nothing lost, and messages that say what is true: run folders, atomic writes, NaN at the
step, corrupt files, the config a run records, and the CLI's words."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

import videocoop.train.trainer as train_mod
import videocoop.utils.files as files_mod
from videocoop.cli import ExitCode, main
from videocoop.clip import TINY_MODEL
from videocoop.data import FeatureDataset, is_packed, load_feature_file, pack
from videocoop.data.synthetic import synthesize
from videocoop.train import TrainConfig, TrainingDiverged, build, fit, load_checkpoint, train_one_epoch, validate
from videocoop.utils.errors import VideoCoopError
from videocoop.utils.files import atomic_write


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety")
    return synthesize(out, clip_model=TINY_MODEL, n_classes=4, train_per_class=8, val_per_class=4,
                      noise=3.0, num_frames=6, max_frames=10, seed=1)


def _argv(synth, out, *extra):
    return ["train", "--feature-dir", synth["train"], "--val-feature-dir", synth["val"],
            "--initial-prompts-file", synth["prompts_file"], "--epochs", "3", "--num-frames", "4",
            "--batch-size", "8", "--output-dir", str(out), "--progress", "none", *extra]


def _interrupt_at_epoch(monkeypatch, n):
    real, calls = train_mod.train_one_epoch, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", interrupted)
    return real


# --------------------------------------------------------------------------- run folders


def test_rerunning_a_stopped_run_without_resume_loses_nothing(synth, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = _interrupt_at_epoch(monkeypatch, 3)
    assert main(_argv(synth, out)) == ExitCode.INTERRUPTED  # Ctrl-C after epoch 2
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    metrics = (out / "metrics.jsonl").read_text()
    capsys.readouterr()

    assert main(_argv(synth, out)) == ExitCode.USAGE  # the same command again, no --resume
    err = capsys.readouterr().err
    assert "holds a run stopped after epoch 2 of 3" in err and "--resume" in err and "--overwrite" in err
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == 2  # the checkpoint still there
    assert (out / "metrics.jsonl").read_text() == metrics

    assert main(_argv(synth, out, "--resume")) == ExitCode.OK
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == 3
    capsys.readouterr()
    assert main(_argv(synth, out)) == ExitCode.USAGE  # finished: says so
    err = capsys.readouterr().err
    assert "holds a finished run (3 epochs" in err and "--overwrite" in err and "--eval-only" in err


def test_overwrite_deletes_only_after_the_new_run_is_built_and_checked(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(synth, out, "--epochs", "1")) == ExitCode.OK
    before = load_checkpoint(out / "checkpoint_last.pt")["trainable"]["prompt_learner.ctx"]
    # a new config that fails to build (features made by another CLIP): the old run stays
    assert main(_argv(synth, out, "--epochs", "1", "--overwrite", "--clip-model", "ViT-B-32")) == ExitCode.USAGE
    assert "another CLIP" in capsys.readouterr().err
    assert torch.equal(load_checkpoint(out / "checkpoint_last.pt")["trainable"]["prompt_learner.ctx"], before)
    assert (out / "summary.json").is_file()
    # a good one replaces it: a fresh metrics file, not the old one appended to
    assert main(_argv(synth, out, "--epochs", "2", "--overwrite", "--seed", "3")) == ExitCode.OK
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert (out / "log.txt").read_text().count("classes,") == 1  # the old log went with the old run
    assert not torch.equal(load_checkpoint(out / "checkpoint_last.pt")["trainable"]["prompt_learner.ctx"], before)


def test_a_run_that_never_finished_an_epoch_needs_overwrite(synth, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = _interrupt_at_epoch(monkeypatch, 1)
    assert main(_argv(synth, out)) == ExitCode.INTERRUPTED  # after the epoch-0 evaluation
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    capsys.readouterr()
    assert main(_argv(synth, out)) == ExitCode.USAGE
    assert "stopped before its first epoch ended" in capsys.readouterr().err
    assert main(_argv(synth, out, "--resume")) == ExitCode.USAGE
    assert "pass --overwrite to start it again" in capsys.readouterr().err
    assert main(_argv(synth, out, "--resume", "--overwrite")) == ExitCode.USAGE
    assert "pass one of them" in capsys.readouterr().err


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_syncs_before_the_rename_and_leaves_the_old_file_on_error(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files_mod.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(files_mod.os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    path = tmp_path / "checkpoint.pt"
    train_mod.save_checkpoint(path, epoch=1, x=torch.ones(2))
    assert events[:2] == ["fsync", "replace"] and torch.load(path, weights_only=True)["epoch"] == 1

    def broken(fh):
        fh.write(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the previous version, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary left


def test_resume_rewrites_metrics_atomically(synth, tmp_path, monkeypatch):
    cfg = TrainConfig(feature_dir=synth["train"], val_feature_dir=synth["val"], output_dir=str(tmp_path / "out"),
                      epochs=2, num_frames=4, batch_size=8, progress="none")
    fit(cfg)
    (tmp_path / "out" / "summary.json").unlink()
    metrics = (tmp_path / "out" / "metrics.jsonl").read_text()

    def crash(a, b):
        raise OSError("killed mid-rewrite")

    monkeypatch.setattr(files_mod.os, "replace", crash)
    with pytest.raises(OSError, match="killed mid-rewrite"):
        fit(TrainConfig(**{**cfg.to_dict(), "resume": True}))
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == metrics


# --------------------------------------------------------------------------- NaN at the step


class _Counting:
    """A loader over fixed batches that counts how many were taken; batch ``nan_at`` (0-based) holds a NaN."""

    def __init__(self, batches, nan_at):
        self.batches, self.nan_at, self.taken = batches, nan_at, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i, (x, y) in enumerate(self.batches):
            self.taken += 1
            if i == self.nan_at:
                x = x.clone()
                x[0, 0, 0] = float("nan")
            yield x, y, {}


def test_a_nan_loss_stops_within_check_every_steps(tiny_clip):
    from videocoop.model import VideoFeatureCLIP

    torch.manual_seed(0)
    model = VideoFeatureCLIP(["a", "b", "c"], *tiny_clip, n_ctx=2)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(40)]
    loader = _Counting(batches, nan_at=6)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 7 of 40") as e:
        train_one_epoch(model, loader, opt, "cpu", check_every=5)
    assert e.value.step == 7 and loader.taken == 10  # read at step 10: 3 steps after, not at the epoch's end


def test_divergence_keeps_the_last_good_checkpoint_and_names_the_step(synth, tmp_path, monkeypatch, capsys):
    real = train_mod.train_one_epoch
    calls = {"n": 0}

    def nan_in_epoch_2(model, loader, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            loader = _Counting([(x, y) for x, y, _ in loader], nan_at=1)
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", nan_in_epoch_2)
    out = tmp_path / "run"
    assert main(_argv(synth, out, "--check-every", "2")) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "loss became nan at step 2 of 4 of epoch 2 (step 6 of the run)" in err
    assert "checkpoint_last.pt keeps epoch 1" in err and "lower --lr" in err
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == 1
    assert torch.isfinite(load_checkpoint(out / "checkpoint_last.pt")["trainable"]["prompt_learner.ctx"]).all()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert "loss became nan" in (out / "log.txt").read_text()


# --------------------------------------------------------------------------- eval-only, config.json


def test_eval_only_without_validation_uses_evaluation_sampling(synth, tmp_path):
    cfg = TrainConfig(feature_dir=synth["train"], output_dir=str(tmp_path / "out"), epochs=1, num_frames=2,
                      batch_size=8, progress="none")
    fit(cfg)
    first = fit(TrainConfig(**{**cfg.to_dict(), "eval_only": True}))
    torch.manual_seed(123)  # another RNG state: evaluation sampling must not depend on it
    second = fit(TrainConfig(**{**cfg.to_dict(), "eval_only": True}))
    assert first == second
    built = build(TrainConfig(**{**cfg.to_dict(), "val_feature_dir": synth["train"]}))  # the split, as validation
    built.model.load_trainable_state_dict(load_checkpoint(tmp_path / "out" / "checkpoint_last.pt")["trainable"])
    loader = torch.utils.data.DataLoader(built.val_set, batch_size=8, collate_fn=train_mod.collate_samples)
    expected = validate(built.model, loader, "cpu", built.classnames)
    assert not built.val_set.train and first["loss"] == pytest.approx(expected.loss, abs=1e-6)
    assert first["top1"] == pytest.approx(expected.top1)


def test_config_json_records_what_the_run_used_and_reruns_it(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(synth, out, "--epochs", "2")) == ExitCode.OK
    config = json.loads((out / "config.json").read_text())
    assert config["n_ctx"] == 5  # "a video of a person": the prompts file's 5 tokens, not the default 16
    assert config["device"] == "cpu" and config["precision"] == "fp32" and config["clip_model"] == TINY_MODEL
    assert not {"resume", "eval_only", "overwrite"} & set(config)  # actions of one call, not settings

    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.json"), "--output-dir", str(again)]) == ExitCode.OK
    rows = lambda d: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                      for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(again) == rows(out)  # the same run, from its file
    # flags given beside it override the file, even when they equal the defaults
    third = tmp_path / "third"
    assert main(["train", "--config", str(out / "config.json"), "--output-dir", str(third), "--epochs", "1",
                 "--batch-size", "32"]) == ExitCode.OK
    config3 = json.loads((third / "config.json").read_text())
    assert (config3["epochs"], config3["batch_size"], config3["n_ctx"]) == (1, 32, 5)

    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": 2, "learning_rate": 0.1}')
    capsys.readouterr()
    assert main(["train", "--config", str(bad)]) == ExitCode.USAGE
    assert "unknown config key(s) ['learning_rate']" in capsys.readouterr().err


# --------------------------------------------------------------------------- packing


def test_pack_replaces_a_split_whole_and_only_when_told(synth, tmp_path):
    dst = tmp_path / "packed"
    pack(synth["train"], dst)
    assert (dst / "features.json").is_file()
    bare = tmp_path / "bare"  # the same features without features.json
    (bare / "c").mkdir(parents=True)
    np.save(bare / "c" / "v.npy", np.ones((3, 32), dtype=np.float32))
    with pytest.raises(VideoCoopError, match="holds a packed split already: pass --overwrite"):
        pack(bare, dst)
    assert is_packed(dst) and len(json.loads((dst / "packed.json").read_text())["paths"]) == 32
    pack(bare, dst, overwrite=True)
    assert not (dst / "features.json").exists()  # nothing of the old split claims the new features
    assert json.loads((dst / "packed.json").read_text())["videos"] == 1
    # a pack that fails half-way leaves the split as it was
    np.save(bare / "c" / "w.npy", np.full((3, 32), 1e6, dtype=np.float32))
    with pytest.raises(VideoCoopError, match="beyond float16's range"):
        pack(bare, dst, overwrite=True)
    assert json.loads((dst / "packed.json").read_text())["videos"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "packed"]  # no temporary folders left
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(VideoCoopError, match="exists and is not a packed split"):
        pack(bare, other, overwrite=True)
    assert (other / "readme.txt").read_text() == "mine"


# --------------------------------------------------------------------------- messages


def _junk_npy(p):
    p.write_bytes(os.urandom(64))


def _object_npy(p):
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _truncated_npy(p):
    np.save(p, np.ones((4, 8), dtype=np.float32))
    p.write_bytes(p.read_bytes()[:-8])


class Pickled:  # a class of the test module: torch.load(weights_only=True) refuses it
    pass


def _object_pt(p):
    torch.save({"features": torch.ones(2, 8), "extra": Pickled()}, p)


def _truncated_pt(p):
    torch.save(torch.ones(4, 8), p)
    p.write_bytes(p.read_bytes()[:100])


@pytest.mark.parametrize("suffix, make, reason", [
    (".npy", _junk_npy, "it is damaged or in another format; a valid one holds one numeric [T, D] array"),
    (".npy", _object_npy, "it holds Python objects (an object array), and videocoop never unpickles objects"),
    (".npy", _truncated_npy, "it is cut short (120 bytes of data where its header announces 128: float32 [4, 8])"),
    (".pt", _object_pt, "it holds a pickled test_safety.Pickled object, and videocoop never unpickles objects"),
    (".pt", _truncated_pt, "it is damaged or in another format"),
    (".pt", lambda p: p.write_bytes(b""), "it is empty"),
])
def test_corrupt_files_are_named_without_advice_to_unpickle(tmp_path, suffix, make, reason):
    path = tmp_path / f"v{suffix}"
    make(path)
    with pytest.raises(VideoCoopError) as e:
        load_feature_file(path)
    message = str(e.value)
    assert f"{path}: not a valid {suffix} file" in message and reason in message
    for advice in ("allow_pickle", "weights_only", "trust", "pickle.load", "file an issue"):
        assert advice not in message


def test_a_corrupt_checkpoint_says_so_without_advice(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    path.write_bytes(os.urandom(256))
    with pytest.raises(VideoCoopError, match=r"checkpoint_last\.pt: not a valid \.pt file") as e:
        load_checkpoint(path)
    assert "weights_only" not in str(e.value) and "the tensors and plain values videocoop train saves" in str(e.value)


def test_a_folder_of_videos_points_to_extraction(tmp_path):
    for name in ("a/v1.avi", "a/v2.avi", "b/v3.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"\x00")
    with pytest.raises(VideoCoopError, match=r"holds videos \(3 files.*not frame features.*videocoop extract"):
        FeatureDataset(tmp_path)


def test_cli_warning_names_the_flags(synth, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(_argv(synth, tmp_path / "run", "--epochs", "1")) == ExitCode.OK
    err = capsys.readouterr().err
    assert "random weights" in err and "--pretrained TAG or --clip-checkpoint FILE" in err
    assert "pretrained=" not in err


def test_a_mistyped_train_flag_shows_trains_usage(capsys):
    assert main(["train", "--feature-dir", "x", "--batchsize", "4"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: videocoop train")
    assert "unrecognized arguments: --batchsize 4" in err and "--batchsize: did you mean --batch-size?" in err
    assert "Traceback" not in err
