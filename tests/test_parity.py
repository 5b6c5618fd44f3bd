"""TextEncoder against open_clip's own encode_text, the full-length run and a per-class loop."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from videocoop.model import PromptLearner, TextEncoder, VideoFeatureCLIP

TEMPLATE = "a video of a"


def _template_strings(pl: PromptLearner, template: str) -> list[str]:
    """The prompts written out with the template's words in the context slots."""
    out = []
    for text in pl.prompt_texts:
        words = iter(template.split())
        out.append(" ".join(next(words) if w == "X" else next(words) + "." if w == "X." else w for w in text.split()))
    return out


def _reference_mean_pool(clip_model, tokens):
    """Mean over 0..EOT written as a plain per-class loop over open_clip's own modules."""
    x = clip_model.token_embedding(tokens) + clip_model.positional_embedding
    x = clip_model.ln_final(clip_model.transformer(x, attn_mask=clip_model.attn_mask))
    eot = tokens.argmax(-1)
    pooled = torch.stack([x[i, : int(eot[i]) + 1].mean(0) for i in range(len(tokens))])
    return pooled @ clip_model.text_projection


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("pool", ["eot", "mean"])
def test_template_context_equals_encode_text(tiny_clip, classnames, position, pool):
    clip_model, tokenizer = tiny_clip
    pl = PromptLearner(classnames, clip_model, tokenizer, ctx_init=TEMPLATE, class_token_position=position)
    tokens = tokenizer(_template_strings(pl, TEMPLATE))
    expected = clip_model.encode_text(tokens) if pool == "eot" else _reference_mean_pool(clip_model, tokens)
    got = TextEncoder(clip_model, pool=pool)(pl(), pl.tokenized_prompts)
    assert got.shape == (len(classnames), 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


WORDS = ["jump", "apply eye makeup", "brush hair", "ride", "playing cello", "a", "yo yo", "tai chi"]


@given(
    n_ctx=st.integers(1, 12),
    names=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5, unique=True),
    position=st.sampled_from(["end", "middle", "front"]),
    pool=st.sampled_from(["eot", "mean"]),
    csc=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_truncation_is_exact(tiny_clip, n_ctx, names, position, pool, csc, seed):
    clip_model, tokenizer = tiny_clip
    torch.manual_seed(seed)
    short = PromptLearner(names, clip_model, tokenizer, n_ctx=n_ctx, csc=csc, class_token_position=position)
    full = PromptLearner(names, clip_model, tokenizer, n_ctx=n_ctx, csc=csc, class_token_position=position, truncate=False)
    with torch.no_grad():
        full.ctx.copy_(short.ctx.detach().normal_(std=0.5))  # random context, not the init
        short.ctx.copy_(full.ctx)
    enc = TextEncoder(clip_model, pool=pool)
    assert short.tokenized_prompts.shape[1] < full.tokenized_prompts.shape[1] == 77
    torch.testing.assert_close(enc(short(), short.tokenized_prompts), enc(full(), full.tokenized_prompts), atol=1e-5, rtol=0)


def test_eot_found_by_id_when_it_is_not_the_largest(tiny_clip, classnames):
    clip_model, tokenizer = tiny_clip
    pl = PromptLearner(classnames, clip_model, tokenizer, n_ctx=4, truncate=False)
    tokens = pl.tokenized_prompts.clone()
    tokens[tokens == 0] = 49407 + 1  # padding with an id larger than EOT: argmax would pick it
    by_id = TextEncoder(clip_model, eot_token_id=49407)(pl(), tokens)
    reference = TextEncoder(clip_model)(pl(), pl.tokenized_prompts)
    torch.testing.assert_close(by_id, reference)
    by_argmax = TextEncoder(clip_model)(pl(), tokens)
    assert not torch.allclose(by_argmax, reference)


def test_forward_runs_on_meta_and_moves_every_buffer(classnames):
    from videocoop.clip import TINY_MODEL, load_clip

    clip_model, tokenizer = load_clip(TINY_MODEL)  # our own copy: .to() moves the shared CLIP modules
    model = VideoFeatureCLIP(classnames, clip_model, tokenizer, n_ctx=4, temporal_agg="transformer")
    model.to("meta")
    assert all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    logits = model(torch.empty(2, 3, 32, device="meta"))
    assert logits.shape == (2, len(classnames)) and logits.device.type == "meta"


def test_half_precision_clip_with_fp32_context(classnames):
    from videocoop.clip import TINY_MODEL, load_clip

    for precision in ("bf16", "fp16"):
        clip_model, tokenizer = load_clip(TINY_MODEL, precision=precision)
        ref_model, _ = load_clip(TINY_MODEL)
        model = VideoFeatureCLIP(classnames, clip_model, tokenizer, ctx_init=TEMPLATE)
        ref = VideoFeatureCLIP(classnames, ref_model, tokenizer, ctx_init=TEMPLATE)
        assert model.prompt_learner.ctx.dtype == torch.float32
        text = model.encode_text()
        assert text.dtype == torch.float32 and torch.isfinite(text).all()
        # half-precision weights only perturb the features slightly
        cos = (text * ref.encode_text()).sum(-1)
        assert cos.min() > 0.99, (precision, cos)
        model(torch.randn(2, 4, 32)).sum().backward()
        assert model.prompt_learner.ctx.grad.dtype == torch.float32
        assert torch.isfinite(model.prompt_learner.ctx.grad).all()
