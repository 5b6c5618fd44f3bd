"""`videocoop sweep`: the grid as ordinary runs, resumable, and a table that averages the runs' own numbers."""
import csv
import json

import numpy as np
import pytest

import videocoop.train.trainer as train_mod
from videocoop.cli import ExitCode, main
from videocoop.clip import TINY_MODEL
from videocoop.data.protocols import harmonic_mean
from videocoop.data.synthetic import synthesize
from videocoop.eval import SweepConfig, run_sweep
from videocoop.eval.sweep import table_rows
from videocoop.train import TrainConfig
from videocoop.train.record import class_list_hash
from videocoop.utils.errors import VideoCoopError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return synthesize(out, clip_model=TINY_MODEL, n_classes=4, train_per_class=5, val_per_class=3,
                      noise=3.0, num_frames=6, seed=4)


def _summaries(root, shots, seeds):
    return [json.loads((root / f"shots{shots}_seed{s}" / "summary.json").read_text()) for s in seeds]


def _csv(root):
    with open(root / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_sweep_is_resumable_and_its_table_averages_the_runs(synth, tmp_path, monkeypatch, capsys):
    root = tmp_path / "sweep"
    argv = ["sweep", "--feature-dir", synth["train"], "--val-feature-dir", synth["val"],
            "--initial-prompts-file", synth["prompts_file"], "--epochs", "2", "--warmup-epochs", "0", "--lr", "0.05",
            "--num-frames", "4", "--shots", "2,4", "--seeds", "1,2", "--output-dir", str(root), "--progress", "plain"]
    real, calls = train_mod.train_one_epoch, {"n": 0}

    def killed_in_the_third_runs_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", killed_in_the_third_runs_second_epoch)
    assert main(argv) == ExitCode.INTERRUPTED
    assert "run the same sweep command again" in capsys.readouterr().err
    monkeypatch.setattr(train_mod, "train_one_epoch", real)

    assert main(argv) == ExitCode.OK  # the same command finishes the grid
    out = capsys.readouterr().out
    for line in ("[1/5] zeroshot: finished (zeroshot.json), skipped", "[2/5] shots2_seed1: finished (summary.json), skipped",
                 "[3/5] shots2_seed2: finished (summary.json), skipped", "[4/5] shots4_seed1: resuming the stopped run",
                 "[5/5] shots4_seed2: training (4 shots, seed 2, split seed 2)", "| 4 shots | 2 |"):
        assert line in out, line

    rows = _csv(root)
    zs = json.loads((root / "zeroshot" / "zeroshot.json").read_text())
    assert rows[0]["setting"] == "zero-shot" and float(rows[0]["top1_mean"]) == zs["top1"] and rows[0]["runs"] == "1"
    for row, shots in zip(rows[1:], (2, 4)):
        summaries = _summaries(root, shots, (1, 2))
        top1 = [s["final_val_top1"] for s in summaries]
        assert row["setting"] == f"{shots} shots" and row["runs"] == "2"
        assert float(row["top1_mean"]) == pytest.approx(np.mean(top1), abs=1e-9)
        assert float(row["top1_std"]) == pytest.approx(np.std(top1), abs=1e-9)  # ddof=0, as CoOp
        assert float(row["top5_mean"]) == pytest.approx(np.mean([s["final_val_top5"] for s in summaries]), abs=1e-9)
        assert [s["shots"] for s in summaries] == [shots, shots] and [s["split_seed"] for s in summaries] == [1, 2]
    assert len(rows) == 3
    md = (root / "results.md").read_text()
    assert md.splitlines()[2].startswith("| zero-shot | 1 |") and f"{float(rows[1]['top1_mean']):.2f} ± " in md
    assert (root / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each run is an ordinary run folder: its own draw, seeds as the sweep says
    config = json.loads((root / "shots4_seed2" / "config.json").read_text())
    assert (config["shots"], config["seed"], config["split_seed"]) == (4, 2, None)  # the split seed is the seed
    assert json.loads((root / "shots4_seed2" / "shots.json").read_text())["split_seed"] == 2
    drawn = json.loads((root / "shots2_seed1" / "shots.json").read_text())["videos"]
    assert set(drawn) == set(synth["classnames"]) and all(len(v) == 2 for v in drawn.values())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_mod, "fit", no_training)
    table = (root / "results.csv").read_text()
    assert main(argv) == ExitCode.OK  # every run finished: nothing trains, the same table
    assert capsys.readouterr().out.count("finished (") == 5
    assert (root / "results.csv").read_text() == table


def test_a_base_to_novel_sweep_reports_base_novel_and_hm(synth, tmp_path):
    train = TrainConfig(feature_dir=synth["train"], val_feature_dir=synth["val"], epochs=1, warmup_epochs=0, lr=0.05,
                        num_frames=4, base_classes="half", progress="none")
    cfg = SweepConfig(train=train, shots=[3], seeds=[1, 2], output_dir=str(tmp_path / "b2n"))
    result = run_sweep(cfg)
    assert result.trained == ["zeroshot", "shots3_seed1", "shots3_seed2"] and not result.skipped and not result.failed
    zero, row = result.rows
    summaries = _summaries(tmp_path / "b2n", 3, (1, 2))
    for key, name in (("base", "base_top1"), ("novel", "novel_top1")):
        assert row[f"{key}_mean"] == pytest.approx(np.mean([s[name] for s in summaries]), abs=1e-9)
        assert row[f"{key}_std"] == pytest.approx(np.std([s[name] for s in summaries]), abs=1e-9)
    assert row["hm"] == pytest.approx(harmonic_mean(row["base_mean"], row["novel_mean"]))  # CoCoOp: H of the means
    assert row["hm_std"] == pytest.approx(np.std([s["hm"] for s in summaries]), abs=1e-9)
    zs = json.loads((tmp_path / "b2n" / "zeroshot" / "zeroshot.json").read_text())
    assert (zero["base_mean"], zero["novel_mean"], zero["hm"]) == (zs["base_top1"], zs["novel_top1"], zs["hm"])
    # the protocol each run records, printed under the table
    record = summaries[0]["protocol"]
    assert record["model_selection"].startswith("last epoch") and record["frames"] == 4 and record["views"] == 1
    assert record["shots"] == 3 and record["split_seed"] == 1 and record["classes"] == 2 and record["novel_classes"] == 2
    assert record["classes_sha256"] == class_list_hash(synth["classnames"][:2])
    assert zs["protocol"]["templates"] == zs["templates"] and zs["protocol"]["classes"] == 4
    text = (tmp_path / "b2n" / "results.md").read_text()
    protocol = text.split("Protocol:", 1)[1]
    for words in ("model selection: last epoch", "4 frames, one per segment", "1 view per video",
                  f"classes: 2, sha256 {record['classes_sha256']}", "shots: 3 per class, drawn with the run's seed",
                  "HM: the harmonic mean of the mean base and the mean novel accuracy", "zero-shot row: frozen CLIP"):
        assert words in protocol, (words, protocol)
    assert zs["base_classes"] == summaries[0]["base_classes"] == synth["classnames"][:2]
    assert "| setting | runs | base top-1 (%) | novel top-1 (%) | HM (%) |" in (tmp_path / "b2n" / "results.md").read_text()
    assert [r["setting"] for r in _csv(tmp_path / "b2n")] == ["zero-shot", "3 shots"]

    # the same ROOT with other settings would average runs that are not comparable
    other = SweepConfig(train=TrainConfig(**{**train.to_dict(), "lr": 0.01}), shots=[3], seeds=[1, 2],
                        output_dir=str(tmp_path / "b2n"))
    with pytest.raises(VideoCoopError, match=r"holds a sweep with other settings \(lr: 0.05 -> 0.01\)"):
        run_sweep(other)


def test_bad_grids_are_refused_before_any_run(synth, tmp_path, capsys):
    base = ["sweep", "--feature-dir", synth["train"], "--val-feature-dir", synth["val"], "--output-dir", str(tmp_path / "r")]
    for extra, message in (
        (["--shots", "2,8"], "--shots 8: 4 class(es) have fewer than 8 training videos"),
        (["--seed", "3"], "--seed is not a sweep flag: --seeds S1,S2,... sets each run's seed"),
        (["--shots", "2,x"], "expected comma-separated integers"),
        (["--seeds", "1,1"], "--seeds lists [1] more than once"),
        (["--resume"], "--resume is not a sweep flag"),
    ):
        assert main(base + extra) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "r").exists()
    assert main(["sweep", "--feature-dir", synth["train"], "--output-dir", str(tmp_path / "r")]) == ExitCode.USAGE
    assert "pass --val-feature-dir" in capsys.readouterr().err


def test_a_sweep_config_from_a_dict_takes_the_train_settings_as_a_dict():
    cfg = SweepConfig.from_dict({"train": {"feature_dir": "f", "lr": 0.1}, "shots": [1, 2]})
    assert cfg == SweepConfig(train=TrainConfig(feature_dir="f", lr=0.1), shots=[1, 2])
    with pytest.raises(VideoCoopError, match=r"unknown sweep config key\(s\) \['seed'\]; valid keys: train, shots.*"
                                             r"; seed: did you mean seeds\?"):
        SweepConfig.from_dict({"train": TrainConfig(), "seed": [1]})
    with pytest.raises(VideoCoopError, match=r"unknown config key\(s\) \['lrr'\].*; lrr: did you mean lr\?"):
        SweepConfig.from_dict({"train": {"lrr": 0.1}})


def test_an_interrupted_sweep_says_rerunning_it_continues(synth, tmp_path, monkeypatch, capsys):
    import videocoop.cli.sweep as sweep_command

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_command, "run_sweep", interrupted)
    argv = ["sweep", "--feature-dir", synth["train"], "--val-feature-dir", synth["val"], "--output-dir", str(tmp_path)]
    assert main(argv) == ExitCode.INTERRUPTED
    assert "run the same sweep command again: finished runs are skipped" in capsys.readouterr().err


def test_the_hm_of_a_sweep_is_the_hm_of_the_mean_accuracies_not_the_mean_of_the_runs_hms():
    """KgCoOp #9: the harmonic mean taken per seed and then averaged. Two seeds whose base and novel accuracies
    trade places: their own HMs are 18 each, the means are 50 and 50, and CoCoOp's tables report H(50, 50) = 50."""
    found = {2: [{"base_top1": 90.0, "novel_top1": 10.0, "hm": harmonic_mean(90.0, 10.0)},
                 {"base_top1": 10.0, "novel_top1": 90.0, "hm": harmonic_mean(10.0, 90.0)}]}
    (row,) = table_rows(found, base_to_novel=True)
    per_seed = np.mean([s["hm"] for s in found[2]])
    assert per_seed == pytest.approx(18.0) and row["hm"] == pytest.approx(50.0) and row["hm"] != pytest.approx(per_seed)
    assert row["hm_std"] == pytest.approx(0.0)  # the spread of the runs' own HMs
