"""The zero-shot baseline: CLIP's own text path, template ensembling, and the command."""
import json

import pytest
import torch
import torch.nn.functional as F

from videocoop.cli import ExitCode, main
from videocoop.clip import TINY_MODEL
from videocoop.data import collate_samples
from videocoop.data.synthetic import synthesize
from videocoop.eval import ZeroShotConfig, zero_shot
from videocoop.eval.zeroshot import TemplateClassifier, template_features
from videocoop.model import VideoFeatureCLIP
from videocoop.train import TrainConfig, build, validate
from videocoop.utils.errors import VideoCoopError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("zeroshot")
    return synthesize(out, clip_model=TINY_MODEL, n_classes=5, train_per_class=2, val_per_class=4,
                      noise=3.0, num_frames=6, max_frames=9, seed=3)


def test_one_template_scores_as_coops_prompts_before_training(synth, tmp_path):
    # "a video of a person {}." is the synth prompts file's phrase: CoOp's untrained prompts
    # are the same tokens, run through our own text path instead of CLIP's encode_text
    result = zero_shot(ZeroShotConfig(feature_dir=synth["val"], output_dir=str(tmp_path / "zs")))
    built = build(TrainConfig(feature_dir=synth["train"], val_feature_dir=synth["val"],
                              initial_prompts_file=synth["prompts_file"], progress="none"))
    loader = torch.utils.data.DataLoader(built.val_set, batch_size=7, collate_fn=collate_samples)
    untrained = validate(built.model, loader, built.device, built.classnames)
    assert result["loss"] == pytest.approx(untrained.loss, abs=1e-5)
    assert result["top1"] == untrained.top1 and result["top5"] == untrained.top5
    assert result["per_class"] == untrained.per_class
    assert json.loads((tmp_path / "zs" / "zeroshot.json").read_text())["top1"] == result["top1"]
    with pytest.raises(VideoCoopError, match="holds a zero-shot result already: pass --overwrite"):
        zero_shot(ZeroShotConfig(feature_dir=synth["val"], output_dir=str(tmp_path / "zs")))


def test_templates_are_ensembled_in_the_embedding_space(tiny_clip):
    clip, tokenizer = tiny_clip
    words = ["apply eye makeup", "archery", "yo yo"]
    templates = ["a video of a person {}.", "{}", "a clip of someone doing {}, an action"]
    got = template_features(clip, tokenizer, words, templates, torch.device("cpu"))
    with torch.no_grad():
        each = [F.normalize(clip.encode_text(tokenizer([t.format(w) for w in words])), dim=-1) for t in templates]
    expected = F.normalize(torch.stack(each).mean(0), dim=-1)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, each[0], atol=1e-3)  # the ensemble is not one template

    # videos are pooled as the trained model pools them (temporal_agg="mean")
    features, mask = torch.randn(4, 7, 32), torch.arange(7)[None, :] < torch.tensor([7, 5, 3, 1])[:, None]
    trained = VideoFeatureCLIP(words, clip, tokenizer, n_ctx=2)
    zs = TemplateClassifier(got, clip.logit_scale, words)
    assert torch.allclose(zs.encode_video(features, mask), trained.encode_video(features, mask), atol=1e-6)


def test_the_command_reports_base_novel_and_hm(synth, tmp_path, capsys):
    templates = tmp_path / "templates.txt"
    templates.write_text("# two templates\na video of a person {}.\nsomeone is doing {}\n")
    out = tmp_path / "zs"
    rc = main(["eval", "--zero-shot", "--feature-dir", synth["val"], "--templates-file", str(templates),
               "--base-classes", "half", "--output-dir", str(out), "--progress", "plain"])
    assert rc == ExitCode.OK
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads((out / "zeroshot.json").read_text())
    assert written["templates"] == ["a video of a person {}.", "someone is doing {}"]
    assert written["base_classes"] == synth["classnames"][:3] and written["novel_classes"] == synth["classnames"][3:]
    b, n = written["base_top1"], written["novel_top1"]
    assert printed["hm"] == written["hm"] == pytest.approx(2 * b * n / (b + n))
    assert set(written["per_class"]) == set(synth["classnames"])


@pytest.mark.parametrize("argv, message", [
    (["eval", "--feature-dir", "."], "pass --zero-shot (a trained run is evaluated with videocoop train --eval-only"),
    (["eval", "--zero-shot", "--feature-dir", ".", "--templates", "a {} of {}"], "must hold exactly one {}"),
    (["eval", "--zero-shot", "--feature-dir", ".", "--templates", "no slot"], "must hold exactly one {}"),
    (["eval", "--zero-shot", "--feature-dir", "/nonexistent"], "feature-dir /nonexistent does not exist"),
])
def test_usage_errors(argv, message, capsys):
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_config_from_a_dict_names_the_closest_key():
    assert ZeroShotConfig.from_dict({"feature_dir": "f", "templates": ["a {}"]}) == \
        ZeroShotConfig(feature_dir="f", templates=["a {}"])
    with pytest.raises(VideoCoopError, match=r"unknown zero-shot config key\(s\) \['template', 'zzz'\]; valid keys: "
                                             r"feature_dir, templates, .*; template: did you mean templates\?$"):
        ZeroShotConfig.from_dict({"template": ["a {}"], "zzz": 1})
