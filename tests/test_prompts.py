"""PromptLearner: the CoOp layout, initialisation, buffers, errors."""
import pytest
import torch

from videocoop.model import PromptLearner, class_words
from videocoop.utils.errors import VideoCoopError


def _learner(tiny_clip, classnames, **kw):
    clip_model, tokenizer = tiny_clip
    return PromptLearner(classnames, clip_model, tokenizer, **kw)


def test_ctx_is_the_only_parameter_and_layout_tensors_are_buffers(tiny_clip, classnames):
    pl = _learner(tiny_clip, classnames, n_ctx=4)
    assert [n for n, _ in pl.named_parameters()] == ["ctx"]
    buffers = dict(pl.named_buffers())
    for name in ("tokenized_prompts", "token_prefix", "token_suffix"):
        assert name in buffers
    # no plain tensor attribute anywhere (CoOp keeps tokenized_prompts as one)
    plain = [k for k, v in vars(pl).items() if isinstance(v, torch.Tensor)]
    assert plain == []


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_layout_token_order(tiny_clip, position):
    clip_model, tokenizer = tiny_clip
    pl = _learner(tiny_clip, ["brush_hair"], n_ctx=4, class_token_position=position)
    x = tokenizer(["x"])[0, 1].item()
    brush, hair = tokenizer(["brush hair"])[0, 1:3].tolist()
    dot = tokenizer(["."])[0, 1].item()
    expected = {
        "end": [x, x, x, x, brush, hair, dot],
        "middle": [x, x, brush, hair, x, x, dot],
        "front": [brush, hair, x, x, x, x, dot],
    }[position]
    tokens = pl.tokenized_prompts[0].tolist()
    assert tokens == [49406] + expected + [49407]  # truncated right after EOT
    # the embeddings follow the same order: fixed slots equal the token embeddings
    prompts = pl()
    emb = clip_model.token_embedding(pl.tokenized_prompts)
    fixed = pl.tokenized_prompts != x
    assert torch.allclose(prompts[fixed], emb[fixed])
    ctx_rows = prompts[~fixed]
    assert torch.allclose(ctx_rows, pl.ctx, atol=0)


def test_truncation_keeps_max_eot_plus_one(tiny_clip):
    pl = _learner(tiny_clip, ["a", "apply eye makeup"], n_ctx=3)
    full = _learner(tiny_clip, ["a", "apply eye makeup"], n_ctx=3, truncate=False)
    assert pl.tokenized_prompts.shape == (2, 1 + 3 + 3 + 1 + 1)
    assert full.tokenized_prompts.shape == (2, 77)
    assert torch.equal(full.tokenized_prompts[:, :9], pl.tokenized_prompts)
    assert (full.tokenized_prompts[:, 9:] == 0).all()


def test_ctx_init_sets_n_ctx_to_bpe_token_count(tiny_clip, classnames):
    clip_model, tokenizer = tiny_clip
    phrase = "a video of a person's"  # "person's" is two BPE tokens: 6 tokens, 5 words
    pl = _learner(tiny_clip, classnames, n_ctx=16, ctx_init=phrase)
    tokens = tokenizer([phrase])[0]
    n = int(tokens.argmax()) - 1
    assert n == 6 and pl.n_ctx == 6
    assert torch.equal(pl.ctx, clip_model.token_embedding(tokens[1:1 + n]))


def test_csc_and_per_class_init_shapes(tiny_clip, classnames):
    clip_model, tokenizer = tiny_clip
    pl = _learner(tiny_clip, classnames, n_ctx=5, csc=True)
    assert pl.ctx.shape == (len(classnames), 5, 32)
    pl = _learner(tiny_clip, classnames, ctx_init="a video of a", csc=True)
    assert pl.ctx.shape == (len(classnames), 4, 32)
    assert all(torch.equal(pl.ctx[0], pl.ctx[i]) for i in range(len(classnames)))
    # a mapping gives per-class context and implies CSC; a shorter phrase fills the
    # slots nearest the class name, classes left out start random
    init = {"jump": "a person jumping high", "brush_hair": "someone"}
    pl = _learner(tiny_clip, classnames, ctx_init=init)
    assert pl.csc and pl.ctx.shape == (len(classnames), 4, 32)
    j, b = classnames.index("jump"), classnames.index("brush_hair")
    jump_tokens = tokenizer([init["jump"]])[0, 1:5]
    assert torch.equal(pl.ctx[j], clip_model.token_embedding(jump_tokens))
    someone = tokenizer(["someone"])[0, 1:2]
    assert torch.equal(pl.ctx[b, -1:], clip_model.token_embedding(someone))
    assert not torch.equal(pl.ctx[0], pl.ctx[j])


def test_class_words():
    assert class_words("brush_hair") == "brush hair"
    assert class_words("ApplyEyeMakeup") == "ApplyEyeMakeup"
    assert class_words("ApplyEyeMakeup", split_camel_case=True) == "Apply Eye Makeup"
    assert class_words("PlayingDaf_HTTPTest", split_camel_case=True) == "Playing Daf HTTP Test"


def test_camel_case_and_display_names_reach_the_prompt(tiny_clip):
    pl = _learner(tiny_clip, ["ApplyEyeMakeup", "YoYo"], n_ctx=2, split_camel_case=True,
                  display_names={"YoYo": "playing with a yo-yo"})
    assert pl.prompt_texts == ["X X Apply Eye Makeup.", "X X playing with a yo-yo."]


@pytest.mark.parametrize("kwargs,match", [
    (dict(classnames=[]), "classnames is empty"),
    (dict(classnames=["jump", ""]), "empty or non-string class name ''"),
    (dict(classnames=["jump", "run", "jump"]), r"duplicate class names \['jump'\]"),
    (dict(classnames="jump"), "must be a list of strings"),
    (dict(n_ctx=0), "n_ctx must be a positive integer, got 0"),
    (dict(class_token_position="start"), "unknown class_token_position 'start'; choose one of end, middle, front"),
    (dict(ctx_init=""), "empty initial prompt"),
    (dict(ctx_init={"nope": "a video"}), r"unknown classes \['nope'\]"),
    (dict(display_names={"nope": "x"}), r"unknown classes \['nope'\]"),
    (dict(n_ctx=74), r"does not fit the context length 77: class 'jump' needs 78 tokens.*\+ 74 context \+ 1 class"),
])
def test_errors_name_the_bad_value(tiny_clip, kwargs, match):
    args = dict(classnames=["jump", "run"], n_ctx=4)
    args.update(kwargs)
    with pytest.raises(VideoCoopError, match=match):
        _learner(tiny_clip, **args)


def test_too_long_class_name_is_refused_not_truncated(tiny_clip):
    long_name = " ".join(["word"] * 70)
    with pytest.raises(VideoCoopError, match="needs 89 tokens.*a cut prompt would lose its EOT"):
        _learner(tiny_clip, ["short", long_name], n_ctx=16)
