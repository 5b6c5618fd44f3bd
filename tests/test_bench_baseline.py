"""The seed-faithful baseline computes what our model computes (else the benchmark is unfair)."""
import pytest
import torch

from bench.baseline import SeedFaithfulCLIP
from videocoop.data import UCF101
from videocoop.model import VideoFeatureCLIP


def _pair(tiny_clip, classnames, pool, n_ctx=4):
    clip_model, tokenizer = tiny_clip
    ours = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=n_ctx, text_pool=pool)
    seed = SeedFaithfulCLIP(classnames, clip_model, tokenizer, n_ctx=n_ctx, text_pool=pool)
    with torch.no_grad():
        seed.prompt_learner.ctx.copy_(ours.prompt_learner.ctx)
    return ours, seed


@pytest.mark.parametrize("pool", ["mean", "eot"])
def test_baseline_text_features_equal_ours(tiny_clip, pool):
    names = UCF101[:7] + ["brush_hair"]
    ours, seed = _pair(tiny_clip, names, pool)
    assert seed.prompt_learner().shape[1] == 77  # the full context, not truncated
    assert ours.prompt_learner().shape[1] < 77
    with torch.no_grad():
        diff = (ours.encode_text() - seed.encode_text()).abs().max().item()
    assert diff <= 1e-5


def test_baseline_logits_and_ctx_gradient_equal_ours(tiny_clip, classnames):
    ours, seed = _pair(tiny_clip, classnames, "mean")
    feats = torch.randn(3, 5, ours.embed_dim)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    a, b = ours(feats, mask), seed(feats, mask)
    assert (a - b).abs().max().item() <= 1e-4  # logits are scaled by exp(logit_scale) ~ 14
    a.logsumexp(-1).sum().backward()
    b.logsumexp(-1).sum().backward()
    want, got = seed.prompt_learner.ctx.grad, ours.prompt_learner.ctx.grad
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()  # fp32 rounding, relative to the gradient's scale


def test_baseline_keeps_the_seed_buffers(tiny_clip, classnames):
    _, seed = _pair(tiny_clip, classnames, "mean")
    buffers = dict(seed.prompt_learner.named_buffers())
    assert {"token_prefix", "token_suffix", "tokenized_prompts"} <= set(buffers)
    assert [n for n, p in seed.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
