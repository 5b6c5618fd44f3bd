"""Other open_clip text towers: one built without a causal mask (MobileCLIP), Hugging Face ones refused."""
import json
import sys
import warnings

import open_clip
import pytest
import torch

from checks import Status, faults, run_audits
from videocoop.clip import load_clip
from videocoop.model import SharedLayout, VideoFeatureCLIP
from videocoop.utils.errors import VideoCoopError

TINY_CONFIG = "videocoop/clip/model_configs/videocoop-tiny.json"


@pytest.fixture(scope="module", params=[False, True], ids=["CLIP", "CustomTextCLIP"])
def maskless_clip(request, tmp_path_factory):
    """The tiny architecture with ``no_causal_mask`` (as MobileCLIP-S1's text tower), as a CLIP
    (the mask on the model) and as a CustomTextCLIP (on ``.text``), random weights, seed 0."""
    name = f"videocoop-tiny-no-causal-mask{'-custom' if request.param else ''}"
    cfg = json.loads(open(TINY_CONFIG).read())
    cfg["text_cfg"]["no_causal_mask"] = True
    cfg["custom_text"] = request.param
    folder = tmp_path_factory.mktemp("configs")
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(name, seed=0)


def test_maskless_tower_runs_the_full_context_and_equals_encode_text(maskless_clip):
    """Truncating to max(EOT) + 1 is exact only under a causal mask: here the EOT attends to
    the padding, so the model must run all 77 positions, as encode_text does."""
    clip_model, tokenizer = maskless_clip
    names = ["jump", "brush hair", "hurling (sport)"]
    model = VideoFeatureCLIP(names, clip_model, tokenizer, ctx_init="a video of a")  # context = real tokens
    pl = model.prompt_learner
    assert pl.tokenized_prompts.shape == (3, 77)
    expected = clip_model.encode_text(tokenizer([t.replace("X X X X", "a video of a") for t in pl.prompt_texts]))
    with torch.no_grad():
        plain = model.text_encoder(pl(), pl.tokenized_prompts)
        forward = model.text_encoder(pl(), pl.tokenized_prompts, layout=SharedLayout.of(pl))  # what training runs
        cut = model.text_encoder(pl()[:, :10], pl.tokenized_prompts[:, :10])
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(forward, expected, atol=1e-5, rtol=0)
    assert (cut - expected).abs().max() > 1e-3  # what a truncating port would compute instead


def test_maskless_tower_passes_every_audit_and_causal_mask_says_why(maskless_clip):
    torch.manual_seed(0)
    results = {r.id: r for r in run_audits(faults.with_data(*maskless_clip, faults.NAMES))}
    bad = {i: (r.status, r.message) for i, r in results.items()
           if r.status != Status.PASS and not (i in faults.CLEAN and r.status == Status.SKIP)}  # no source videos
    assert not bad
    r = results["causal-mask"]
    assert "no causal mask by design" in r.message and "all 77 positions" in r.message
    assert r.metrics["causal_mask"] is False and r.metrics["max_rel_diff"] <= r.metrics["tolerance"]


def test_prompts_cut_on_a_maskless_tower_fail(maskless_clip):
    torch.manual_seed(0)
    target = faults.cut_without_causal_mask(*maskless_clip, faults.NAMES)
    causal, parity = run_audits(target, ["causal-mask", "text-encoder-parity"])
    assert causal.status == Status.FAIL, (causal.message, causal.evidence)
    assert "no causal mask by design" in causal.message and "cut to 12 of the 77 positions" in causal.message
    assert parity.status == Status.FAIL and "differs from encode_text" in parity.message


@pytest.mark.parametrize("name,words", [
    ("ViT-B-16-SigLIP", "its tokenizer comes from Hugging Face (timm/ViT-B-16-SigLIP)"),
    ("roberta-ViT-B-32", "its tokenizer and text tower come from Hugging Face (roberta-base)"),
])
def test_hugging_face_text_models_are_refused_in_one_line(name, words):
    """Not a raw ModuleNotFoundError for transformers: one line that says why, before anything is built."""
    imported = "transformers" in sys.modules
    with pytest.raises(VideoCoopError) as e:
        load_clip(name)
    message = str(e.value)
    assert words in message and "transformers package" in message and "\n" not in message
    assert ("transformers" in sys.modules) == imported  # refused before anything reached for it


def test_a_maskless_half_tower_encodes_the_probe_references_once(maskless_clip, monkeypatch):
    """causal-mask on a tower without a mask compares with encode_text of the probe classes' ids, the ids the
    half-precision floor is measured on: one clean pass serves both (before: the same ids encoded twice)."""
    import copy

    from checks import reference

    clip, tok = maskless_clip
    calls = []
    encode_text = reference.encode_text
    monkeypatch.setattr(reference, "encode_text",
                        lambda c, ids, mean=False: calls.append(ids) or encode_text(c, ids, mean=mean))
    torch.manual_seed(0)
    (r,) = run_audits(faults.clean(copy.deepcopy(clip).half(), tok, faults.NAMES), ["causal-mask"])
    assert r.status == Status.PASS and "no causal mask by design" in r.message, (r.message, r.evidence)
    assert r.metrics["noise_floor"] is not None  # fp16: the floor measured on the clean CLIP and its fp32 copy
    assert len(calls) == 2 and torch.equal(calls[0], calls[1])  # the clean CLIP once, its fp32 copy once
