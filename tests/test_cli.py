"""The ``videocoop`` command, called in-process: the seed's command line, usage errors."""
import json
import subprocess
import sys

import pytest

from videocoop.cli import ExitCode, add_train_arguments, build_parser, config_from_args, main
from videocoop.clip import TINY_MODEL
from videocoop.train import TrainConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    rc = main(["synth", "--out", str(out), "--clip-model", TINY_MODEL, "--n-classes", "4",
               "--train-per-class", "6", "--val-per-class", "3", "--noise", "2"])
    assert rc == ExitCode.OK
    return out


def test_synth_writes_the_standard_layout(data_dir, capsys):
    for split in ("train", "val"):
        info = json.loads((data_dir / split / "features.json").read_text())
        assert info["clip_model"] == TINY_MODEL and info["weights"] == "random:0" and info["dim"] == 32
        assert len((data_dir / split / "classnames.txt").read_text().split()) == 4
    prompts = json.loads((data_dir / "custom_prompts.json").read_text())
    assert prompts["default_prompt"] == "a video of a person"


def test_the_seed_command_line(data_dir, tmp_path, capsys):
    out = tmp_path / "custom_prompts"
    rc = main(["train", "--feature-dir", str(data_dir / "train"), "--val-feature-dir", str(data_dir / "val"),
               "--initial-prompts-file", str(data_dir / "custom_prompts.json"), "--epochs", "2",
               "--output-dir", str(out)])
    assert rc == ExitCode.OK
    stdout = capsys.readouterr().out
    # stdout is not a terminal under pytest: plain lines, no progress bars
    assert "epoch 0/2 | val loss" in stdout and "epoch 2/2 | train loss" in stdout
    assert "untrained prompts (epoch 0)" in stdout
    for name in ("config.json", "metrics.jsonl", "summary.json", "log.txt", "checkpoint_last.pt"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint_best.pt").exists()  # no selection split: no epoch chosen
    rc = main(["train", "--feature-dir", str(data_dir / "train"), "--val-feature-dir", str(data_dir / "val"),
               "--output-dir", str(out), "--eval-only"])
    assert rc == ExitCode.OK
    final = json.loads((out / "summary.json").read_text())["final_val_top1"]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["top1"] == pytest.approx(final)  # the last epoch


def test_rich_progress_runs(data_dir, tmp_path, capsys):
    rc = main(["train", "--feature-dir", str(data_dir / "train"), "--epochs", "1", "--progress", "rich",
               "--output-dir", str(tmp_path / "o")])
    assert rc == ExitCode.OK
    assert "items/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "the following arguments are required: --feature-dir"),
        (["train", "--feature-dir", "x", "--optimizer", "adam"], "invalid choice: 'adam'"),
        (["train", "--feature-dir", "x", "--epochs", "many"], "invalid int value"),
        (["fly"], "invalid choice: 'fly'"),
        (["train", "--feature-dir", "/nonexistent/features"], "feature-dir /nonexistent/features does not exist"),
        (["train", "--feature-dir", "x", "--epochs", "0"], "epochs must be >= 1"),
    ],
)
def test_usage_errors_exit_2_without_traceback(argv, message, capsys):
    assert main(argv) == ExitCode.USAGE == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_data_is_a_usage_error(data_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "v.npy").write_bytes(b"garbage")
    assert main(["train", "--feature-dir", str(bad), "--clip-model", TINY_MODEL, "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad / "a" / "v.npy") in err and "Traceback" not in err


def test_config_from_args_covers_every_field():
    import argparse

    parser = argparse.ArgumentParser()
    add_train_arguments(parser, require_data=False)
    args = parser.parse_args(["--csc", "--lr", "0.1", "--num-frames", "8"])
    cfg = config_from_args(args)
    assert cfg == TrainConfig(csc=True, lr=0.1, num_frames=8)
    flags = {a.dest for a in parser._actions} - {"help", "config"}
    assert flags == {f for f in TrainConfig().to_dict()}  # one flag per field (and --config), no more


def test_help_and_module_entry_point():
    assert main(["--help"]) == ExitCode.OK
    build_parser()  # builds without side effects
    proc = subprocess.run([sys.executable, "-m", "videocoop", "train", "--optimizer", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_interrupt_exits_130_and_points_to_resume(monkeypatch, capsys):
    import videocoop.cli.train as train_command

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "fit", interrupted)
    assert main(["train", "--feature-dir", "."]) == ExitCode.INTERRUPTED == 130
    assert "--resume" in capsys.readouterr().err


def test_an_interrupted_extract_says_rerunning_continues_and_which_process_speaks(tmp_path, monkeypatch, capsys):
    """Under torchrun every message names its rank (``prog``), extract's Ctrl-C message too."""
    import videocoop.cli.extract as extract_command

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_command, "extract", interrupted)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["extract", "--videos", str(tmp_path), "--out", str(tmp_path / "f")]) == ExitCode.INTERRUPTED
    err = capsys.readouterr().err
    assert "videocoop (rank 1): interrupted" in err and "rerun the same command" in err


@pytest.mark.parametrize("argv,sampling", [([], (8, None)), (["--num-frames", "3"], (3, None)),
                                           (["--fps", "2.5"], (None, 2.5))])
def test_extract_flags_give_one_sampling(tmp_path, monkeypatch, argv, sampling):
    """--num-frames, --fps or neither (ExtractConfig's default) reach the config as exactly one sampling."""
    import videocoop.cli.extract as extract_command

    seen = []

    def record(cfg):
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_command, "extract", record)
    assert main(["extract", "--videos", str(tmp_path), "--out", str(tmp_path / "f"), *argv]) == ExitCode.INTERRUPTED
    assert (seen[0].num_frames, seen[0].fps) == sampling
    seen[0].sampling()  # exactly one: a valid Sampling
