"""load_clip: frozen, seeded, never downloads, clear errors."""
import warnings
from types import SimpleNamespace

import pytest
import torch

from videocoop.clip import (
    TINY_MODEL,
    UntrainedModelWarning,
    embed_dim,
    load_clip,
    load_clip_of,
    weights_id,
    weights_id_of,
)
from videocoop.utils.errors import VideoCoopError


def test_tiny_model_is_frozen_eval_and_small(tiny_clip):
    clip_model, tokenizer = tiny_clip
    assert not any(p.requires_grad for p in clip_model.parameters())
    assert not clip_model.training
    assert clip_model.transformer.width <= 64
    assert 1 <= len(clip_model.transformer.resblocks) <= 2
    assert clip_model.positional_embedding.shape[0] == 77
    assert embed_dim(clip_model) == 32
    # the real CLIP BPE tokenizer: "a photo" is SOS, 2 tokens, EOT
    tokens = tokenizer(["a photo"])
    assert tokens.shape == (1, 77)
    assert tokens[0, :4].tolist() == [49406, 320, 1125, 49407]


def test_random_weights_depend_only_on_seed():
    with pytest.warns(UntrainedModelWarning, match="random weights"):
        a, _ = load_clip(TINY_MODEL, seed=3)
    torch.manual_seed(123)  # the caller's RNG state must not matter ...
    before = torch.rand(1)
    torch.manual_seed(123)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b, _ = load_clip(TINY_MODEL, seed=3)
        c, _ = load_clip(TINY_MODEL, seed=4)
    assert torch.equal(torch.rand(1), before)  # ... nor be disturbed by loading
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.token_embedding.weight, c.token_embedding.weight)


def test_checkpoint_file_loads_its_weights(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src, _ = load_clip(TINY_MODEL, seed=7)
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    loaded, _ = load_clip(TINY_MODEL, checkpoint=path, seed=0)
    assert torch.equal(loaded.token_embedding.weight, src.token_embedding.weight)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert weights_id(checkpoint=path).startswith("sha256:")
    assert weights_id() == "random:0" and weights_id(pretrained="openai") == "openai"
    # a config's CLIP (train, extract and zero-shot configs all name it with these four fields)
    cfg = SimpleNamespace(clip_model=TINY_MODEL, pretrained=None, clip_checkpoint=str(path), clip_seed=0)
    assert torch.equal(load_clip_of(cfg)[0].token_embedding.weight, src.token_embedding.weight)
    assert weights_id_of(cfg) == weights_id(checkpoint=path)


@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("amp", torch.float32)])
def test_precision_sets_transformer_dtype(precision, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip_model, _ = load_clip(TINY_MODEL, precision=precision)
    assert clip_model.transformer.get_cast_dtype() == dtype


def test_errors_name_the_bad_value(tmp_path, monkeypatch):
    with pytest.raises(VideoCoopError, match="unknown CLIP model 'ViT-Nope'.*ViT-B-32"):
        load_clip("ViT-Nope")
    with pytest.raises(VideoCoopError, match="unknown precision 'fp8'"):
        load_clip(TINY_MODEL, precision="fp8")
    with pytest.raises(VideoCoopError, match="not found: .*missing.pt"):
        load_clip(TINY_MODEL, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(VideoCoopError, match="unknown pretrained tag 'nope' for ViT-B-32"):
        load_clip("ViT-B-32", pretrained="nope")
    # a real tag whose file is not cached: an error saying where it looked, no download
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(VideoCoopError, match="not in the local cache.*Looked in: .*openai"):
        load_clip("ViT-B-32", pretrained="openai", cache_dir=str(tmp_path / "cache"))
