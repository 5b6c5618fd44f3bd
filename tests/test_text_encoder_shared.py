"""The shared-prefix text path gives the plain full-length path's numbers and gradients."""
import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from videocoop.data import UCF101
from videocoop.model import SharedLayout, TextEncoder, VideoFeatureCLIP, eot_positions
from videocoop.model.shared_prefix import shareable
from videocoop.utils.errors import VideoCoopError

NAMES = UCF101[:30] + ["brush_hair", "ride bike", "jump"]


def _text_and_grad(model):
    model.zero_grad(set_to_none=True)
    text = model.encode_text()  # [n_cls, E]
    weights = torch.linspace(-1, 1, text.numel(), device=text.device).view_as(text)  # touches every output
    (text * weights).sum().backward()
    return text.detach(), model.prompt_learner.ctx.grad


@given(
    position=st.sampled_from(["end", "middle", "front"]),
    n_ctx=st.integers(1, 8),
    names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True),
    pool=st.sampled_from(["mean", "eot"]),
    mode=st.sampled_from(["concat", "split"]),
    csc=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shared_prefix_equals_full_length_plain(tiny_clip, position, n_ctx, names, pool, mode, csc, seed):
    clip_model, tokenizer = tiny_clip
    kwargs = dict(n_ctx=n_ctx, class_token_position=position, text_pool=pool, csc=csc)
    plain = VideoFeatureCLIP(names, clip_model, tokenizer, truncate=False, **kwargs)  # all 77 positions
    plain.text_encoder.shared_prefix = "off"
    fast = VideoFeatureCLIP(names, clip_model, tokenizer, **kwargs)
    fast.text_encoder.shared_prefix = mode
    with torch.no_grad():
        ctx = torch.randn(plain.prompt_learner.ctx.shape, generator=torch.Generator().manual_seed(seed))
        plain.prompt_learner.ctx.copy_(ctx)
        fast.prompt_learner.ctx.copy_(ctx)
    want, want_grad = _text_and_grad(plain)
    got, got_grad = _text_and_grad(fast)  # grouped by suffix length, padding skipped
    assert (got - want).abs().max().item() <= 1e-5
    assert (got_grad - want_grad).abs().max() <= 1e-5 * want_grad.abs().max()  # relative to its scale
    # The layout the shared path plans with is the one the token ids hold.
    pl = fast.prompt_learner
    assert list(SharedLayout.of(pl).eot) == eot_positions(pl.tokenized_prompts, pl.eot_token_id).tolist()
    # CoOp's two-argument call (no layout) runs the plain truncated path: same numbers.
    with torch.no_grad():
        text = fast.text_encoder(pl(), pl.tokenized_prompts)
    assert (torch.nn.functional.normalize(text, dim=-1) - want).abs().max().item() <= 1e-5


def test_shared_path_runs_where_it_should(tiny_clip, classnames):
    clip_model, tokenizer = tiny_clip
    end = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4)
    front = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4, class_token_position="front")
    csc = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4, csc=True)
    enc = end.text_encoder
    assert enc.shareable
    assert enc.shared_mode(torch.device("cpu"), end.prompt_learner.shared_prefix_len) == "split"
    assert enc.shared_mode(torch.device("cuda"), end.prompt_learner.shared_prefix_len) == "off"  # until measured
    for model in (front, csc):  # sharing SOS only saves nothing
        assert model.text_encoder.shared_mode(torch.device("cpu"), model.prompt_learner.shared_prefix_len) == "off"
    enc.shared_prefix = "off"
    assert enc.shared_mode(torch.device("cpu"), 5) == "off"


def test_shared_path_runs_on_meta(tiny_clip, classnames):
    clip_model, tokenizer = tiny_clip
    model = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4, text_pool="mean")
    for mode in ("concat", "split"):
        model.text_encoder.shared_prefix = mode
        meta = copy.deepcopy(model).to("meta")
        assert meta.encode_text().shape == (len(classnames), model.embed_dim)


def test_unrecognised_blocks_or_mask_fall_back(tiny_clip):
    clip_model, _ = tiny_clip
    enc = TextEncoder(clip_model, pool="mean", shared_prefix="concat")
    assert shareable(enc.transformer, enc.attn_mask)
    assert not shareable(enc.transformer, None)
    assert not shareable(enc.transformer, torch.zeros_like(enc.attn_mask))  # full attention: not causal
    other = copy.deepcopy(enc.transformer)
    block = other.resblocks[0]
    block.__class__ = type("PatchedBlock", (type(block),), {})  # a block we were not written against
    assert not shareable(other, enc.attn_mask)


def test_unknown_shared_prefix_mode_names_the_choices(tiny_clip):
    with pytest.raises(VideoCoopError, match="concat"):
        TextEncoder(tiny_clip[0], shared_prefix="fast")


@pytest.mark.parametrize("mode", ["concat", "split"])
def test_shared_path_under_bf16_autocast_with_fp32_context(tiny_clip, classnames, mode):
    clip_model, tokenizer = tiny_clip
    model = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4, text_pool="mean")
    model.text_encoder.shared_prefix = "off"
    want = model.encode_text().detach()  # fp32, plain
    model.text_encoder.shared_prefix = mode
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.encode_text()
    got.sum().backward()
    assert got.dtype == torch.float32 and model.prompt_learner.ctx.grad.dtype == torch.float32
    assert (got.detach() - want).abs().max().item() <= 3e-2  # bf16 has 8 bits of mantissa


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["concat", "split"])
def test_shared_path_on_cuda_equals_plain_without_host_sync(own_tiny_clip, classnames, mode):
    clip_model, tokenizer = own_tiny_clip
    model = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4, text_pool="mean").to("cuda")
    model.text_encoder.shared_prefix = "off"
    want, want_grad = _text_and_grad(model)
    model.text_encoder.shared_prefix = mode
    _text_and_grad(model)  # warm-up: CUDA kernels load lazily
    torch.cuda.set_sync_debug_mode("error")
    try:
        got, got_grad = _text_and_grad(model)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert (got - want).abs().max().item() <= 1e-5
    assert (got_grad - want_grad).abs().max() <= 1e-5 * want_grad.abs().max()  # relative to its scale
