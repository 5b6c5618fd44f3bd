"""VideoFeatureCLIP: aggregation, logits, what trains and what stays frozen, devices."""
import pytest
import torch
import torch.nn.functional as F

from videocoop.model import VideoFeatureCLIP
from videocoop.utils.errors import VideoCoopError


def _model(tiny_clip, classnames, **kw):
    clip_model, tokenizer = tiny_clip
    return VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4, **kw)


def test_logits_are_scaled_cosines(tiny_clip, classnames):
    model = _model(tiny_clip, classnames)
    feats = torch.randn(3, 5, 32)
    logits = model(feats)
    video = F.normalize(F.normalize(feats, dim=-1).mean(1), dim=-1)
    text = model.encode_text()
    expected = tiny_clip[0].logit_scale.exp() * video @ text.t()
    torch.testing.assert_close(logits, expected)
    assert logits.shape == (3, len(classnames))


def test_masked_mean_and_max_ignore_padding(tiny_clip, classnames):
    feats = torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    padded = feats.clone()
    padded[0, 3:] = 1e3  # garbage in the padding must not matter
    for agg in ("mean", "max"):
        model = _model(tiny_clip, classnames, temporal_agg=agg)
        got = model.encode_video(padded, mask)
        short = model.encode_video(feats[:1, :3])
        torch.testing.assert_close(got[:1], short)
        torch.testing.assert_close(got[1:], model.encode_video(feats[1:]))


def test_temporal_transformer_equals_mean_at_init(tiny_clip, classnames):
    mean = _model(tiny_clip, classnames, temporal_agg="mean")
    trans = _model(tiny_clip, classnames, temporal_agg="transformer")
    feats = torch.randn(4, 8, 32)
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[1, 5:] = False
    torch.testing.assert_close(trans.encode_video(feats, mask), mean.encode_video(feats, mask))


def test_gradients_reach_ctx_and_temporal_module_only(tiny_clip, classnames):
    model = _model(tiny_clip, classnames, temporal_agg="transformer")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "prompt_learner.ctx" in trainable
    assert all(n == "prompt_learner.ctx" or n.startswith("temporal.") for n in trainable)
    loss = F.cross_entropy(model(torch.randn(4, 8, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert model.prompt_learner.ctx.grad.abs().sum() > 0
    assert model.temporal.out.weight.grad.abs().sum() > 0  # the zero-init projection learns first
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert not any(p.requires_grad for p in tiny_clip[0].parameters())


def test_csc_gives_each_class_its_own_context_gradient(tiny_clip, classnames):
    model = _model(tiny_clip, classnames, csc=True)
    model(torch.randn(2, 3, 32))[:, 1].sum().backward()
    grad = model.prompt_learner.ctx.grad  # [n_cls, n_ctx, width]
    assert grad[1].abs().sum() > 0
    # only class 1's logit was used: other classes' context gets no gradient
    assert grad[torch.arange(len(classnames)) != 1].abs().sum() == 0


def test_trainable_state_roundtrip(tiny_clip, classnames):
    a = _model(tiny_clip, classnames, temporal_agg="transformer")
    with torch.no_grad():
        a.temporal.out.weight.normal_()
    b = _model(tiny_clip, classnames, temporal_agg="transformer")
    state = a.trainable_state_dict()
    assert set(state) == {n for n, p in a.named_parameters() if p.requires_grad}
    b.load_trainable_state_dict(state)
    feats = torch.randn(2, 4, 32)
    assert torch.equal(a(feats), b(feats))
    with pytest.raises(VideoCoopError, match="missing"):
        b.load_trainable_state_dict({"prompt_learner.ctx": state["prompt_learner.ctx"]})


def test_bad_inputs(tiny_clip, classnames):
    with pytest.raises(VideoCoopError, match="unknown temporal_agg 'lstm'"):
        _model(tiny_clip, classnames, temporal_agg="lstm")
    with pytest.raises(VideoCoopError, match="unknown text pool 'cls'"):
        _model(tiny_clip, classnames, text_pool="cls")
    with pytest.raises(VideoCoopError, match=r"features must be \[B, T, 32\].*\[2, 5, 512\]"):
        _model(tiny_clip, classnames)(torch.randn(2, 5, 512))


@pytest.mark.gpu
def test_cuda_forward_backward_and_parity(own_tiny_clip, classnames):
    model = _model(own_tiny_clip, classnames, temporal_agg="transformer")
    cpu_logits = model(torch.ones(2, 4, 32))
    model.to("cuda")
    assert all(t.is_cuda for t in [*model.parameters(), *model.buffers()])
    logits = model(torch.ones(2, 4, 32, device="cuda"))
    logits.sum().backward()
    assert model.prompt_learner.ctx.grad.is_cuda
    torch.testing.assert_close(logits.cpu(), cpu_logits, atol=1e-4, rtol=1e-4)
