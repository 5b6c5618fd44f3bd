"""What a run leaves besides numbers (curves, confusion matrix, TensorBoard events), the
logging contract of a library, and the trainer's pieces."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from checks.core import Trainer
from videocoop import train as train_mod
from videocoop.cli import ExitCode, main
from videocoop.clip import TINY_MODEL, load_clip
from videocoop.data.synthetic import synthesize
from videocoop.model import VideoFeatureCLIP
from videocoop.train import TrainConfig, fit
from videocoop.train.optim import param_groups


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished 3-epoch run with validation and TensorBoard events."""
    root = tmp_path_factory.mktemp("outputs")
    data = synthesize(root / "data", clip_model=TINY_MODEL, n_classes=4, train_per_class=8, val_per_class=5,
                      noise=3.0, num_frames=6, seed=2)
    cfg = TrainConfig(feature_dir=data["train"], val_feature_dir=data["val"], initial_prompts_file=data["prompts_file"],
                      output_dir=str(root / "run"), epochs=3, num_frames=4, batch_size=8, progress="none",
                      tensorboard=True)
    return root / "run", fit(cfg)


def _pixels(path):
    image = Image.open(path)
    image.load()
    return np.asarray(image.convert("L"), dtype=np.float32)


def test_a_run_folder_holds_both_pictures(run):
    out, summary = run
    for name in ("curves.png", "confusion.png"):
        pixels = _pixels(out / name)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 600, (name, pixels.shape)
        assert pixels.std() > 10  # drawn, not blank
    confusion = np.load(out / "confusion.npy")
    assert confusion.shape == (4, 4) and confusion.sum() == 20  # 4 classes x 5 validation videos
    # the matrix is the last epoch's (the model the summary reports): its diagonal is summary.json's per-class top-1
    per_class = [100.0 * confusion[i, i] / confusion[i].sum() for i in range(4)]
    assert per_class == pytest.approx([summary["per_class"][c] for c in summary["classnames"]])
    assert 100.0 * np.trace(confusion) / confusion.sum() == pytest.approx(summary["final_val_top1"])


def test_plot_redraws_an_old_run(run, tmp_path, capsys):
    out, _ = run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for name in ("curves.png", "confusion.png", "confusion.npy"):  # a run written before pictures existed
        (old / name).unlink()
    assert main(["plot", str(old)]) == ExitCode.OK
    assert "curves.png" in capsys.readouterr().out
    assert _pixels(old / "curves.png").std() > 10
    assert _pixels(old / "confusion.png").std() > 10  # per-class bars only
    assert main(["plot", str(tmp_path)]) == ExitCode.USAGE
    assert "holds no metrics.jsonl" in capsys.readouterr().err


def test_tensorboard_holds_the_same_scalars_as_the_metrics(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_top1", "val_loss", "lr"):
        logged = {e.step: e.value for e in events.Scalars(key)}
        expected = {r["epoch"]: r[key] for r in rows if r[key] is not None}
        assert logged.keys() == expected.keys(), key
        assert list(logged.values()) == pytest.approx(list(expected.values()), rel=1e-6), key


def test_the_library_configures_no_logging(run, capsys):
    out, _ = run
    logger = logging.getLogger("videocoop")
    assert logger.level == logging.NOTSET and not logger.handlers  # restored after the run
    assert capsys.readouterr().out == ""  # fit() printed nothing itself: showing lines is the driver's job
    text = (out / "log.txt").read_text()
    assert "epoch 3/3 | train loss" in text and "trained (epoch 3, the last, checkpoint_last.pt)" in text


def test_loading_clip_leaves_the_callers_logging_alone():
    handlers = list(logging.root.handlers)
    logging.disable(logging.INFO)  # the caller's own setting
    try:
        load_clip(TINY_MODEL, seed=0)
        assert logging.root.manager.disable == logging.INFO
    finally:
        logging.disable(logging.NOTSET)
    load_clip(TINY_MODEL, seed=0)  # open_clip's logging.warning() would basicConfig() a bare root
    assert logging.root.handlers == handlers


def test_a_user_level_on_the_videocoop_logger_is_respected(run, tmp_path):
    out, _ = run
    logger = logging.getLogger("videocoop")
    logger.setLevel(logging.WARNING)
    try:
        cfg = TrainConfig.from_file(out / "config.json")
        fit(TrainConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "quiet"), "epochs": 1, "tensorboard": False}))
    finally:
        logger.setLevel(logging.NOTSET)
    assert "epoch 1/1" not in (tmp_path / "quiet" / "log.txt").read_text()


def test_no_weight_decay_on_biases_norms_and_position_embeddings(tiny_clip):
    torch.manual_seed(0)
    model = VideoFeatureCLIP(["a", "b"], *tiny_clip, n_ctx=2, temporal_agg="transformer")
    groups = param_groups(model, 5e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    free = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    assert "prompt_learner.ctx" in decayed and "temporal.out.weight" in decayed
    assert "temporal.pos_embedding" in free and "temporal.out.bias" in free
    assert any("norm" in n for n in free) and not any("norm" in n or n.endswith("bias") for n in decayed)
    assert decayed | free == {n for n, p in model.named_parameters() if p.requires_grad}
    plain = VideoFeatureCLIP(["a", "b"], *tiny_clip, n_ctx=2)
    assert [len(g["params"]) for g in param_groups(plain, 5e-4)] == [1]  # the context alone: one group, as before


def test_the_trainer_module_is_the_audits_trainer():
    assert isinstance(train_mod, Trainer)
    for name in train_mod.__all__:  # the public names stay importable from videocoop.train
        assert hasattr(train_mod, name), name
