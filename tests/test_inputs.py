"""Issue 22, case by case: what ended in a traceback (or a false refusal) for a bad input, and the
weak messages, each now a clear error naming the file, the key or line, the value and what was
expected, with exit code 2 (docs/inputs.md). The property-based fuzz is tests/test_fuzz_inputs.py."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videocoop.cli import ExitCode, main
from videocoop.clip import TINY_MODEL
from videocoop.data import FeatureDataset, read_manifest
from videocoop.data.synthetic import synthesize
from videocoop.train import TrainConfig, fit
from videocoop.utils.errors import VideoCoopError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return synthesize(root / "data", clip_model=TINY_MODEL, n_classes=3, train_per_class=3, val_per_class=2,
                      noise=2.0, num_frames=4, seed=3)


@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    """A finished one-epoch run with validation (checkpoints, metrics, confusion.npy)."""
    out = tmp_path_factory.mktemp("inputs_run") / "run"
    fit(TrainConfig(feature_dir=synth["train"], val_feature_dir=synth["val"], output_dir=str(out), epochs=1,
                    n_ctx=2, batch_size=4, progress="none"))
    return out


def _train(synth, out, *extra):
    return ["train", "--feature-dir", synth["train"], "--val-feature-dir", synth["val"], "--n-ctx", "2",
            "--batch-size", "4", "--epochs", "1", "--output-dir", str(out), "--progress", "none", *extra]


def _refused(argv, capsys, *words):
    """``main(argv)`` exits 2 with one message holding every word, and no traceback."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE == 2, err
    assert "Traceback" not in err
    for w in words:
        assert str(w) in err, (w, err)
    return err


# --------------------------------------------------------------------------- the six tracebacks


def test_classnames_txt_in_latin1_names_the_byte_and_says_save_as_utf8(synth, tmp_path, capsys):
    root = tmp_path / "features"
    shutil.copytree(synth["train"], root)
    names = (root / "classnames.txt").read_text(encoding="utf-8").split()
    os.rename(root / names[0], root / "Café")  # a class name outside ASCII, saved by an editor in Latin-1
    (root / "classnames.txt").write_bytes("\n".join(["Café", *names[1:]]).encode("latin-1") + b"\n")
    offset = "Café".encode("latin-1").index(b"\xe9")
    _refused(["train", "--feature-dir", str(root), "--output-dir", str(tmp_path / "o"), "--epochs", "1"], capsys,
             root / "classnames.txt", f"byte {offset}", "0xe9", "save it as UTF-8")


def test_resume_eval_only_and_predict_refuse_another_programs_checkpoint(synth, run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    ctx = torch.load(out / "checkpoint_last.pt", weights_only=True)["trainable"]["prompt_learner.ctx"]
    foreign = {"state_dict": {"module.prompt_learner.ctx": ctx}, "epoch": 1, "optimizer": {}}  # CoOp/Dassl's shape
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        torch.save(foreign, out / name)
    words = ("not a checkpoint of videocoop train", "state_dict", "'module.'")
    _refused(_train(synth, out, "--resume"), capsys, out / "checkpoint_last.pt", *words)
    _refused(_train(synth, out, "--eval-only"), capsys, out / "checkpoint_last.pt", *words)
    _refused(_train(synth, out, "--eval-only", "--checkpoint", "best"), capsys, out / "checkpoint_best.pt", *words)
    _refused(["predict", "--run", str(out), "--features", synth["val"], "--out", str(tmp_path / "p.csv")], capsys,
             out / "checkpoint_last.pt", *words)


def test_a_checkpoint_of_another_class_list_or_model_says_what_differs(synth, run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    torch.save({**state, "classnames": state["classnames"][::-1]}, out / "checkpoint_last.pt")
    _refused(_train(synth, out, "--resume"), capsys, out / "checkpoint_last.pt", "classes", state["classnames"][-1])
    ctx = state["trainable"]["prompt_learner.ctx"]
    torch.save({**state, "trainable": {"_orig_mod.prompt_learner.ctx": ctx}}, out / "checkpoint_last.pt")
    _refused(_train(synth, out, "--resume"), capsys, out / "checkpoint_last.pt", "'_orig_mod.'", "torch.compile")
    torch.save({**state, "trainable": {"prompt_learner.ctx": ctx[:1]}}, out / "checkpoint_last.pt")
    _refused(_train(synth, out, "--resume"), capsys, out / "checkpoint_last.pt", "prompt_learner.ctx", "shape",
             list(ctx[:1].shape), list(ctx.shape))


def test_a_hand_edited_config_with_a_string_for_an_int_names_the_field_and_type(synth, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"feature_dir": synth["train"], "epochs": "1", "output_dir": str(tmp_path / "o")}))
    _refused(["train", "--config", str(config)], capsys, config, 'key "epochs"', '"1" (a string)', "an integer")
    config.write_text(json.dumps({"feature_dir": synth["train"], "epochs": 1, "warmup_epoch": 0}))
    _refused(["train", "--config", str(config)], capsys, config, "'warmup_epoch'", "did you mean warmup_epochs")


@pytest.mark.parametrize("damage", ["cut", "pickle"])
def test_plot_refuses_a_damaged_confusion_npy_naming_it(run, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    path = out / "confusion.npy"
    if damage == "cut":
        path.write_bytes(path.read_bytes()[:-5])
    else:
        np.save(path, np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    _refused(["plot", str(out)], capsys, path)


def test_checks_target_that_raises_at_import_names_the_users_file_and_line(tmp_path, monkeypatch, capsys):
    from checks.cli import main as checks_main

    (tmp_path / "issue22_target.py").write_text("import torch\n\nmodel = undefined_name\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code = checks_main(["--target", "issue22_target:factory", "--report", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE == 2, err
    assert "NameError" in err and "undefined_name" in err and "issue22_target.py:3" in err and "Traceback" not in err


def test_a_spreadsheets_csv_utf8_manifest_is_read(synth, tmp_path):
    rows = [f"{p.relative_to(synth['train']).as_posix()},{p.parent.name}\n"
            for p in sorted(p for p in (tmp_path.parent / synth["train"]).rglob("*.pt"))]
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + ("path,label\r\n" + "".join(r.replace("\n", "\r\n") for r in rows)).encode())
    assert read_manifest(manifest)[0].keys() == {"path", "label"}
    assert len(FeatureDataset(synth["train"], manifest=manifest)) == len(rows)


# --------------------------------------------------------------------------- weak messages


@pytest.mark.parametrize("key, value, expected", [
    ("clip_model", 32, "a string"),
    ("weights", None, "a string"),
    ("dim", "32", "an integer"),
])
def test_features_json_names_the_key_and_the_expected_type(synth, tmp_path, capsys, key, value, expected):
    root = tmp_path / "features"
    shutil.copytree(synth["train"], root)
    info = json.loads((root / "features.json").read_text())
    (root / "features.json").write_text(json.dumps({**info, key: value}))
    _refused(["train", "--feature-dir", str(root), "--output-dir", str(tmp_path / "o")], capsys,
             root / "features.json", f'key "{key}"', f"found {json.dumps(value)}", expected)


def test_a_symlink_loop_in_a_video_tree_is_named(tmp_path, capsys):
    from videocoop.video import find_videos

    (tmp_path / "train" / "jump").mkdir(parents=True)
    (tmp_path / "train" / "jump" / "a.mp4").write_bytes(b"")
    os.symlink(tmp_path / "train", tmp_path / "train" / "jump" / "again")
    with pytest.raises(VideoCoopError, match="symbolic link loop") as e:
        find_videos(tmp_path)
    assert str(tmp_path / "train" / "jump" / "again") in str(e.value)


@pytest.mark.parametrize("flags, words", [
    (["--seed", "-1"], "seed must be between 0 and 4294967295"),
    (["--seed", str(2 ** 40)], "seed must be between 0 and 4294967295"),
    (["--num-frames", str(2 ** 40)], "num_frames must be at most 10000"),
])
def test_flags_beyond_what_a_run_can_take_are_refused(synth, tmp_path, capsys, flags, words):
    """Found by the fuzz (a retyped config key): numpy refused the seed, numpy ran out of memory,
    each with a traceback."""
    _refused(["train", "--feature-dir", synth["train"], "--output-dir", str(tmp_path / "o"), *flags], capsys, words)


def test_an_html_page_saved_as_mp4_is_recorded_as_a_failure(tmp_path, capsys):
    """As docs/extraction.md says: a video that cannot be decoded is skipped and recorded in
    DST/failures.jsonl, exit 1; the message says what the file is."""
    from videocoop.video import synthesize_videos

    synthesize_videos(tmp_path / "videos", n_classes=2, train_per_class=1, val_per_class=0, frames=4, width=32,
                      height=32)
    page = tmp_path / "videos" / "train" / sorted(os.listdir(tmp_path / "videos" / "train"))[0] / "page.mp4"
    page.write_text("<!DOCTYPE html>\n<html><head><title>Video</title></head><body>...</body></html>\n")
    code = main(["extract", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "features"), "--clip-model",
                 TINY_MODEL, "--num-frames", "2", "--num-workers", "0", "--progress", "none"])
    captured = capsys.readouterr()
    assert code == ExitCode.FAILED and "Traceback" not in captured.err
    failures = [json.loads(line) for line in (tmp_path / "features" / "failures.jsonl").read_text().splitlines()]
    assert [Path(f["source"]).name for f in failures] == ["page.mp4"]
    assert "an HTML page" in failures[0]["error"]


def test_diff_state_names_what_a_strict_load_would_refuse():
    """The comparison the trainer's checkpoint reader makes, for any model's state (an audit of a
    target can call it on the target's trainable state)."""
    from videocoop.train import diff_state

    model = {"prompt_learner.ctx": torch.zeros(4, 8), "temporal.w": torch.zeros(8)}
    assert not diff_state(dict(model), model)
    saved = {"module." + k: v for k, v in model.items()}
    diff = diff_state(saved, model)
    assert diff.prefix == "module." and diff.prefix_on == "state"
    assert "carry the prefix 'module.' (a DataParallel/DDP wrapper's)" in diff.describe()
    diff = diff_state(model, {"_orig_mod." + k: v for k, v in model.items()})
    assert diff.prefix == "_orig_mod." and diff.prefix_on == "model" and "torch.compile" in diff.describe()
    diff = diff_state({"prompt_learner.ctx": torch.zeros(2, 8), "extra": torch.zeros(1)}, model)
    assert (diff.missing, diff.unexpected, diff.shapes) == (["temporal.w"], ["extra"], [("prompt_learner.ctx", [2, 8], [4, 8])])
    assert diff.prefix is None
    assert diff.describe() == ("missing temporal.w; unexpected extra; prompt_learner.ctx has shape [2, 8] where the "
                               "model's is [4, 8]")


def test_a_traceback_only_when_asked_for(synth, tmp_path, capsys, monkeypatch):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"feature_dir": synth["train"], "epochs": "1"}))
    err = _refused(["train", "--config", str(config)], capsys, config)
    assert err.count("\n") == 1  # one paragraph
    monkeypatch.setenv("VIDEOCOOP_TRACEBACK", "1")
    assert main(["train", "--config", str(config)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"videocoop: error: {config}") and "Traceback (most recent call last)" in err
    assert "InputError" in err
