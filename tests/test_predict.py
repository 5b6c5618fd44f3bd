"""videocoop predict: a trained run on feature folders and on videos, labelled or not."""
import csv
import json
import shutil

import pytest
import torch

from videocoop.cli import main
from videocoop.clip import TINY_MODEL
from videocoop.data.synthetic import synthesize
from videocoop.eval import predict
from videocoop.eval.predict import build_run_model, load_run, run_classes, to_csv, write_predictions
from videocoop.train import TrainConfig, build, fit
from videocoop.utils.errors import VideoCoopError
from videocoop.video import ExtractConfig, extract, synthesize_videos

FRAMES = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Videos -> features -> a two-epoch tiny run."""
    root = tmp_path_factory.mktemp("predict")
    synthesize_videos(root / "videos", n_classes=3, train_per_class=2, val_per_class=1, frames=6, width=64, height=48)
    extract(ExtractConfig(videos=str(root / "videos"), out=str(root / "features"), clip_model=TINY_MODEL,
                          num_frames=FRAMES, num_workers=0, progress="none"))
    fit(TrainConfig(feature_dir=str(root / "features/train"), val_feature_dir=str(root / "features/val"), epochs=2,
                    n_ctx=4, batch_size=2, output_dir=str(root / "run"), progress="none"))
    return root


def test_predictions_on_features_are_the_runs_evaluation(run):
    preds = predict(run / "run", features=run / "features/val", top_k=2, device="cpu")
    assert [r.video for r in preds.rows] == ["blue_spin/blue_spin_val00.pt", "green_rise/green_rise_val00.pt",
                                             "red_slide/red_slide_val00.pt"]
    assert all(len(r.top) == 2 and r.top[0][1] >= r.top[1][1] for r in preds.rows)
    summary = json.loads((run / "run/summary.json").read_text())
    # the checkpoint is the last epoch's: its validation top-1 is the one predict must reproduce
    assert preds.accuracy() == (pytest.approx(summary["final_val_top1"]), 3)
    assert preds.model == f"{run / 'run/checkpoint_last.pt'} (epoch 2, the last epoch trained)"


def test_predictions_on_videos_match_those_on_their_features(run):
    on_videos = predict(run / "run", videos=run / "videos/val", top_k=3, device="cpu", num_workers=0, progress="none")
    on_features = predict(run / "run", features=run / "features/val", top_k=3, device="cpu")
    assert [r.video[:-4] for r in on_videos.rows] == [r.video[:-3] for r in on_features.rows]
    for a, b in zip(on_videos.rows, on_features.rows):  # float16 storage is the only difference
        assert [c for c, _ in a.top] == [c for c, _ in b.top]
        assert [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=1e-3)


def test_unlabelled_flat_folder_and_output_formats(run, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for video in sorted((run / "videos/val").rglob("*.mp4")):
        shutil.copy(video, flat / video.name)
    (flat / "broken.mp4").write_text("not a video")
    code = main(["predict", "--run", str(run / "run"), "--videos", str(flat), "--top-k", "1", "--out",
                 str(tmp_path / "p.csv"), "--num-workers", "0", "--progress", "none"])
    assert code == 1  # one video could not be decoded: said, and the others predicted
    err = capsys.readouterr().err
    assert "could not decode broken.mp4" in err and "Traceback" not in err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["video"] for r in rows] == ["blue_spin_val00.mp4", "green_rise_val00.mp4", "red_slide_val00.mp4"]
    assert all(r["label"] == "" and r["class_1"] in ("blue_spin", "green_rise", "red_slide") for r in rows)
    assert main(["predict", "--run", str(run / "run"), "--features", str(run / "features/val"), "--out",
                 str(tmp_path / "p.json")]) == 0
    data = json.loads((tmp_path / "p.json").read_text())
    assert len(data["predictions"]) == 3 and data["classnames"] == ["blue_spin", "green_rise", "red_slide"]
    assert "wrote" in capsys.readouterr().out
    assert main(["predict", "--run", str(run / "run"), "--features", str(run / "features/val")]) == 0
    assert capsys.readouterr().out.startswith("video,label,class_1,prob_1")  # CSV on stdout, nothing else


def test_bad_inputs_are_named(run, tmp_path, capsys):
    with pytest.raises(VideoCoopError, match="no training run"):
        predict(tmp_path, features=run / "features/val")
    with pytest.raises(VideoCoopError, match="exactly one input"):
        predict(run / "run")
    preds = predict(run / "run", features=run / "features/val")
    with pytest.raises(VideoCoopError, match="suffix must be one of .csv, .json"):
        write_predictions(preds, tmp_path / "p.txt")
    assert main(["predict", "--run", str(run / "run"), "--features", str(run / "features/val"), "--out", "p.xlsx"]) == 2
    assert to_csv(preds).count("\n") == 4


def test_a_base_to_novel_run_predicts_with_the_model_it_trained(tmp_path):
    """Its prompts file words the novel classes too; predict rebuilds the base model through
    the builder training used (it refused the novel classes' display names before)."""
    synth = synthesize(tmp_path / "synth", clip_model=TINY_MODEL, n_classes=4, train_per_class=3, val_per_class=2,
                       num_frames=4, seed=1)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"default_prompt": "a video of a",
                                   "display_names": {c: f"someone {c.lower()}" for c in synth["classnames"]}}))
    run = tmp_path / "run"
    summary = fit(TrainConfig(feature_dir=synth["train"], val_feature_dir=synth["val"], initial_prompts_file=str(prompts),
                              base_classes="half", epochs=1, batch_size=4, output_dir=str(run), progress="none"))
    base = synth["classnames"][:2]
    preds = predict(run, features=synth["val"], top_k=2, device="cpu")
    assert preds.classnames == base and len(preds.rows) == 8  # every video, among the base classes
    assert preds.accuracy() == (pytest.approx(summary["base_top1"]), 4)  # the 4 base videos, as training scored them

    cfg, state, _, _ = load_run(run)
    rebuilt, _ = build_run_model(cfg, state, torch.device("cpu"), run_classes(run, state["classnames"]))
    trained = build(cfg).model  # what training builds from the same config
    trained.load_trainable_state_dict(state["trainable"])
    assert rebuilt.prompt_learner.class_words == [f"someone {c.lower()}" for c in base]
    for name, tensor in trained.state_dict().items():  # every buffer too: token ids, SOS and class embeddings
        assert torch.equal(rebuilt.state_dict()[name], tensor), name
