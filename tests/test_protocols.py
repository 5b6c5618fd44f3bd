"""Few-shot draws and base-to-novel: the same draw everywhere, and no novel class in training."""
import json
import math
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import videocoop.train.trainer as train_mod
from videocoop.clip import TINY_MODEL, load_clip
from videocoop.data import FeatureDataset, collate_samples, pack
from videocoop.data.protocols import apply_protocols, draw_shots, harmonic_mean, split_classes
from videocoop.data.synthetic import synthesize
from videocoop.model import VideoFeatureCLIP
from videocoop.train import TrainConfig, build, fit, load_checkpoint, validate
from videocoop.utils.errors import VideoCoopError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("protocols")
    return synthesize(out, clip_model=TINY_MODEL, n_classes=5, train_per_class=6, val_per_class=4,
                      noise=3.0, num_frames=6, seed=2)


def _cfg(synth, tmp_path, **kw):
    base = dict(feature_dir=synth["train"], val_feature_dir=synth["val"], initial_prompts_file=synth["prompts_file"],
                output_dir=str(tmp_path / "out"), epochs=1, num_frames=4, progress="none")
    return TrainConfig(**{**base, **kw})


# --------------------------------------------------------------------------- the draw


def _split():
    """A UCF101-like split: 4 classes x 9 videos, named as the real files are."""
    classnames = ["Archery", "Biking", "Diving", "YoYo"]
    labels, ids, paths = [], [], []
    for y, c in enumerate(classnames):
        for g in range(9):
            vid = f"v_{c}_g{g // 3 + 1:02d}_c{g % 3 + 1:02d}"
            labels.append(y), ids.append(vid), paths.append(f"/data/ucf101/{c}/{vid}.npy")
    return classnames, labels, ids, paths


_DRAW = """
import json, random, sys
import numpy, torch
random.seed(int(sys.argv[1])), numpy.random.seed(int(sys.argv[1])), torch.manual_seed(int(sys.argv[1]))  # other RNG states
from videocoop.data.protocols import draw_shots
s = json.load(sys.stdin)
order = list(range(len(s["ids"])))[::int(sys.argv[2])]  # another listing order
picked = draw_shots(s["classnames"], [s["labels"][i] for i in order], [s["ids"][i] for i in order], 3, 7,
                    [s["paths"][i] for i in order])
print(json.dumps({"ids": [s["ids"][order[i]] for i in picked]}))
"""


def test_the_draw_is_a_pure_function_of_split_shots_and_seed():
    classnames, labels, ids, paths = _split()
    here = [ids[i] for i in draw_shots(classnames, labels, ids, 3, 7, paths)]
    assert len(here) == 12 and [v.split("_")[1] for v in here] == [c for c in classnames for _ in range(3)]

    # another listing order and another global RNG state, in this process
    order = list(range(len(ids)))
    random.Random(0).shuffle(order)
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    shuffled = draw_shots(classnames, [labels[i] for i in order], [ids[i] for i in order], 3, 7, [paths[i] for i in order])
    assert [ids[order[i]] for i in shuffled] == here

    # two other processes at once, with other hash seeds, RNG states and listing orders
    split = json.dumps({"classnames": classnames, "labels": labels, "ids": ids, "paths": paths})
    procs = [subprocess.Popen([sys.executable, "-c", _DRAW, str(seed), step], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)})
             for seed, step in ((1, "1"), (2, "-1"))]
    outputs = [json.loads(p.communicate(split, timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [o["ids"] for o in outputs] == [here, here]


def test_draws_are_nested_over_shots_and_differ_between_seeds():
    classnames, labels, ids, paths = _split()
    two, four = (set(draw_shots(classnames, labels, ids, k, 1, paths)) for k in (2, 4))
    assert two < four
    draws = {tuple(draw_shots(classnames, labels, ids, 3, seed, paths)) for seed in (1, 2, 3)}
    assert len(draws) == 3


def test_a_class_with_fewer_videos_than_shots_is_named():
    classnames, labels, ids, paths = _split()
    keep = [i for i in range(len(ids)) if not (labels[i] == 1 and i % 9 >= 4)]  # Biking keeps 4
    with pytest.raises(VideoCoopError, match=r"--shots 5: 1 class\(es\) have fewer than 5 training videos: Biking \(4\)"):
        draw_shots(classnames, [labels[i] for i in keep], [ids[i] for i in keep], 5, 0)
    with pytest.raises(VideoCoopError, match="--shots must be >= 1"):
        draw_shots(classnames, labels, ids, 0, 0)


def test_per_file_and_packed_splits_give_the_same_training_videos(synth, tmp_path):
    pack(synth["train"], tmp_path / "packed", dtype="float32")
    built = [build(_cfg(synth, tmp_path, feature_dir=d, shots=3, seed=4)) for d in (synth["train"], str(tmp_path / "packed"))]
    per_file, packed = (b.train_set for b in built)
    assert len(per_file) == 15 and per_file.video_ids == packed.video_ids and per_file.labels == packed.labels
    assert per_file.video_ids == [v for vs in built[0].protocol.shots.values() for v in vs]
    assert built[0].cfg.split_seed is None and built[0].protocol.shots == built[1].protocol.shots
    batches = []
    for ds in (per_file, packed):
        torch.manual_seed(0)  # training's random frame offsets, drawn the same for both
        batches.append(next(iter(DataLoader(ds, batch_size=15, collate_fn=collate_samples))))
    assert torch.equal(batches[0].features, batches[1].features)  # the same frames reach the loader


def test_the_draw_is_recorded_and_a_changed_split_is_not_resumed(synth, tmp_path):
    summary = fit(_cfg(synth, tmp_path, shots=2, split_seed=9))
    out = tmp_path / "out"
    shots = json.loads((out / "shots.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert (config["shots"], config["split_seed"], summary["shots"], summary["split_seed"]) == (2, 9, 2, 9)
    assert shots["shots"] == 2 and shots["split_seed"] == 9
    assert sorted(shots["videos"]) == sorted(synth["classnames"]) and all(len(v) == 2 for v in shots["videos"].values())
    ds = FeatureDataset(synth["train"])
    assert shots["videos"]["Skiing"] == [ds.video_ids[i] for i in draw_shots(ds.classnames, ds.labels, ds.video_ids, 2, 9)
                                         if ds.classnames[ds.labels[i]] == "Skiing"]
    (out / "summary.json").unlink()  # stopped after its last epoch, say; then the data changes
    shots["videos"]["Skiing"][0] = "v_Skiing_train099"
    (out / "shots.json").write_text(json.dumps(shots))
    with pytest.raises(VideoCoopError, match=r"shots.json records other videos drawn .* --resume continues the same run"):
        fit(_cfg(synth, tmp_path, shots=2, split_seed=9, resume=True))


# --------------------------------------------------------------------------- base-to-novel


def test_half_is_cocoops_ceil_and_files_name_base_classes(tmp_path):
    names = [f"c{i}" for i in range(101)]
    assert [len(s) for s in split_classes(names, "half")] == [51, 50]  # UCF101: 51 base, 50 novel
    assert split_classes(["a", "b", "c", "d", "e"], "half") == (["a", "b", "c"], ["d", "e"])
    listed = tmp_path / "base.txt"
    listed.write_text("# base classes\nride bike\n\nclap\n")  # HMDB51 writes ride_bike's words with a space
    assert split_classes(["clap", "dive", "ride_bike"], str(listed)) == (["clap", "ride_bike"], ["dive"])
    vifi = tmp_path / "vifi.csv"
    vifi.write_text("id,name\n0,dive\n1,clap\n")  # ViFi-CLIP's labels/*_base_labels.csv
    assert split_classes(["clap", "dive", "ride_bike"], str(vifi)) == (["clap", "dive"], ["ride_bike"])
    listed.write_text("clap\nswim\n")
    with pytest.raises(VideoCoopError, match=r"names classes not in the training split: \['swim'\]; its classes are"):
        split_classes(["clap", "dive"], str(listed))
    listed.write_text("clap\ndive\n")
    with pytest.raises(VideoCoopError, match="leaves 2 base and 0 novel classes"):
        split_classes(["clap", "dive"], str(listed))
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140) and harmonic_mean(0.0, 0.0) == 0.0


def test_no_novel_class_reaches_a_training_step(synth, tmp_path, monkeypatch):
    seen = {"labels": [], "paths": [], "grad_classes": set(), "model_classes": [], "optimised": []}
    real = train_mod.train_one_epoch

    def recording(model, loader, optimizer, *args, **kwargs):
        pl = model.prompt_learner
        seen["model_classes"].append(list(pl.classnames))
        seen["optimised"].append([p for g in optimizer.param_groups for p in g["params"]])

        def on_prompts(module, inputs, prompts):  # [n_cls, L, width]: which class rows get a gradient
            prompts.register_hook(lambda g: seen["grad_classes"].update(
                module.classnames[i] for i in (g.abs().sum((1, 2)) > 0).nonzero().flatten().tolist()))

        class Watched:
            def __len__(self):
                return len(loader)

            def __iter__(self):
                for batch in loader:
                    seen["labels"] += batch.label.tolist()
                    seen["paths"] += batch.meta["path"]
                    yield batch

        handle = pl.register_forward_hook(on_prompts)
        try:
            return real(model, Watched(), optimizer, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(train_mod, "train_one_epoch", recording)
    summary = fit(_cfg(synth, tmp_path, base_classes="half", shots=3, epochs=2, warmup_epochs=0, lr=0.05))
    out = tmp_path / "out"
    base, novel = synth["classnames"][:3], synth["classnames"][3:]  # ceil(5 / 2) = 3 base classes

    assert seen["model_classes"] == [base, base]  # the model trained has base prompts only
    assert seen["grad_classes"] == set(base)  # every base prompt learned, no other prompt got a gradient
    for params in seen["optimised"]:
        assert len(params) == 1 and params[0].shape == (5, 32)  # the shared context, nothing of a novel model
    classes_of_videos = {os.path.basename(os.path.dirname(p)) for p in seen["paths"]}
    assert classes_of_videos == set(base) and set(seen["labels"]) == {0, 1, 2}
    assert all(base[y] == os.path.basename(os.path.dirname(p)) for y, p in zip(seen["labels"], seen["paths"]))
    drawn = json.loads((out / "shots.json").read_text())["videos"]
    assert sorted(drawn) == base and {os.path.basename(p)[:-3] for p in seen["paths"]} == {v for vs in drawn.values() for v in vs}
    assert json.loads((out / "classes.json").read_text())["novel"] == novel

    # base, novel and HM as CoCoOp defines them
    assert summary["base_top1"] == summary["final_val_top1"]
    assert summary["hm"] == pytest.approx(2 * summary["base_top1"] * summary["novel_top1"]
                                          / (summary["base_top1"] + summary["novel_top1"]))
    assert "HM" in (out / "log.txt").read_text()
    # the novel number, measured again by hand: the trained context in a model over the novel
    # classes, on a folder holding only the novel classes' videos
    only_novel = tmp_path / "novel_val"
    for c in novel:
        shutil.copytree(os.path.join(synth["val"], c), only_novel / c)
    ctx = load_checkpoint(out / "checkpoint_last.pt")["trainable"]["prompt_learner.ctx"]
    clip, tokenizer = load_clip(TINY_MODEL, seed=0)
    model = VideoFeatureCLIP(novel, clip, tokenizer, n_ctx=ctx.shape[0])
    model.prompt_learner.ctx.data.copy_(ctx)
    loader = DataLoader(FeatureDataset(only_novel, num_frames=4), batch_size=8, collate_fn=collate_samples)
    assert validate(model, loader, "cpu", novel).top1 == pytest.approx(summary["novel_top1"])
    assert not math.isnan(summary["hm"]) and set(summary["novel_per_class"]) == set(novel)


def test_class_specific_context_cannot_go_to_novel_classes(synth, tmp_path):
    with pytest.raises(VideoCoopError, match="--csc learns a context per class.*drop --csc"):
        fit(_cfg(synth, tmp_path, base_classes="half", csc=True))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"class_prompts": {synth["classnames"][-1]: "a video of"}}))  # a novel class
    with pytest.raises(VideoCoopError, match="class-specific .*cannot carry over to novel classes"):
        build(_cfg(synth, tmp_path, base_classes="half", initial_prompts_file=str(prompts)))
    with pytest.raises(VideoCoopError, match="--base-classes reports base and novel accuracy .* --val-feature-dir"):
        fit(_cfg(synth, tmp_path, base_classes="half", val_feature_dir=None))
    with pytest.raises(VideoCoopError, match="--base-classes 'thirds': choose half .* no such file"):
        fit(_cfg(synth, tmp_path, base_classes="thirds"))


def test_apply_protocols_splits_validation_by_class(synth):
    train_set, val_set = FeatureDataset(synth["train"]), FeatureDataset(synth["val"])
    select_set = FeatureDataset(synth["train"])  # the split an epoch is chosen on: its base videos only
    split = apply_protocols(TrainConfig(feature_dir="x", base_classes="half"), train_set, val_set, select_set)
    assert split.classnames == synth["classnames"][:3] and split.novel == synth["classnames"][3:]
    assert len(split.train_set) == 18 and len(split.val_set) == 12 and len(split.novel_val_set) == 8
    assert len(split.select_set) == 18
    for ds, names in ((split.val_set, split.classnames), (split.novel_val_set, split.novel),
                      (split.select_set, split.classnames)):
        assert ds.classnames == names
        assert all(names[label] == os.path.basename(os.path.dirname(path)) for path, label in ds.files)
        assert all(ds[i].label == label for i, (_, label) in enumerate(ds.files))
