"""The references the audits hold a model to come from open_clip alone, never from videocoop's own
text path: a bug the model shares with our TextEncoder must still fail."""
import re

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock

from checks import Status, faults, run_audits
from videocoop.model import TextEncoder


def pool_before_eot(self, x, eot, prefix=None):
    """A bug planted in videocoop's own TextEncoder: every pooling reads the token before the EOT."""
    P = 0 if prefix is None else prefix.shape[0]
    return self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot - P - 1])  # [n_cls, width]


@pytest.fixture
def shared_bug(monkeypatch):
    """Our TextEncoder (the model's, and any reference built from it) pools at the same wrong position."""
    monkeypatch.setattr(TextEncoder, "pool_states", pool_before_eot)


@pytest.mark.parametrize("kwargs", [{}, {"text_pool": "mean"}], ids=["eot", "mean"])
def test_a_bug_shared_with_our_text_encoder_fails(shared_bug, kwargs, tiny_clip, classnames):
    (r,) = run_audits(faults.clean(*tiny_clip, classnames, **kwargs), ["text-encoder-parity"])
    assert r.status == Status.FAIL, (r.message, r.evidence)
    assert "differs from encode_text" in r.message


def test_eot_collapse_says_its_fast_reference_equals_encode_text(tiny_clip, classnames):
    (r,) = run_audits(faults.clean(*tiny_clip, classnames), ["eot-collapse"])
    assert r.status == Status.PASS, r.message
    line = next(e for e in r.evidence if e.startswith("encode_text rows:"))
    assert "equal to clip.encode_text at 77 positions on 5 of the prompts" in line


def test_the_natural_prompts_are_encoded_once_per_run_as_encode_text_does(tiny_clip, classnames, monkeypatch):
    """eot-collapse's reference rows and learning-signal's zero-shot text are one encoding of the hand-written
    prompts per run (before: each audit encoded them again), equal to CLIP's encode_text of them."""
    from checks import reference
    from checks.text import NATURAL_PROMPT, class_word_list, natural_prompt_features

    encoded = []
    fast = reference.fast_encode_text
    monkeypatch.setattr(reference, "fast_encode_text", lambda clip, ids: encoded.append(ids) or fast(clip, ids))
    clip, tok = tiny_clip
    target = faults.with_data(clip, tok, classnames)
    results = run_audits(target, ["eot-collapse", "learning-signal"])
    assert [r.status for r in results] == [Status.PASS, Status.PASS], [(r.message, r.evidence) for r in results]
    assert "zero-shot" in " ".join(results[1].evidence)  # learning-signal read the natural prompts' features
    ids, text = natural_prompt_features(target)
    assert torch.equal(ids, tok([NATURAL_PROMPT.format(w) for w in class_word_list(target)]))
    assert sum(torch.equal(i, ids) for i in encoded) == 1 and len(encoded) == 2  # the natural prompts, the bare names
    with torch.no_grad():
        plain = clip.encode_text(ids).float()
    assert (text - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_checks_never_builds_a_reference_from_videocoops_text_path():
    """The audits may import the CoOp layout's helpers, never the text path they audit."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "checks"
    for path in root.rglob("*.py"):
        if root / "faults" in path.parents:  # the planted faults are models, built on ours
            continue
        text = path.read_text()
        imports = [line for line in text.splitlines() if re.match(r"\s*(from|import) videocoop", line)]
        assert not [line for line in imports if re.search(r"text_encoder|shared_prefix|TextEncoder|SharedLayout", line)], path


def test_the_reference_is_a_clean_clip_whatever_the_model_did_to_its_own(tiny_clip):
    """Deep prompts replace CLIP's text blocks: the suite's reference is open_clip's tower of the same
    architecture with CLIP's weights, so it is clean CLIP exactly, not the prompted model handed over."""
    from checks.faults.zoo.deep_prompts import prompted_clip
    from checks.reference import clean_clip

    clip, tok = tiny_clip
    prompted = prompted_clip(clip)
    ids = tok(["a video of a person jumping.", "brush hair"])
    with torch.no_grad():
        assert torch.equal(clean_clip(prompted).encode_text(ids), clip.encode_text(ids))
        assert (prompted.encode_text(ids) - clip.encode_text(ids)).abs().max() > 0.1  # the prompted tower differs


class BrokenAtFullLength(ResidualAttentionBlock):
    """A text block of the user's that fails on the full context (the model itself runs shorter prompts)."""

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        if q_x.shape[1] == 77:
            raise RuntimeError("this block was never meant for 77 positions")
        return super().forward(q_x, k_x, v_x, attn_mask)


def test_a_reference_never_runs_the_models_own_clip_modules(tiny_clip, classnames):
    """The old references ran the user's clip_model.encode_text: a block of theirs that breaks only there was
    reported as 'the model raised'. The clean reference never runs it."""
    import copy

    clip = copy.deepcopy(tiny_clip[0])
    for block in clip.transformer.resblocks:
        block.__class__ = BrokenAtFullLength  # the user's own block class, CLIP's weights in it
    (r,) = run_audits(faults.clean(clip, tiny_clip[1], classnames), ["text-encoder-parity"])
    assert r.status == Status.PASS, (r.message, r.evidence)


def test_a_crash_inside_the_reference_is_the_audits_error(tiny_clip, classnames, monkeypatch):
    from open_clip.transformer import TextTransformer

    def broken(self, text):
        raise ZeroDivisionError("inside the reference")

    monkeypatch.setattr(TextTransformer, "forward", broken)
    (r,) = run_audits(faults.clean(*tiny_clip, classnames), ["text-encoder-parity"])
    assert r.status == Status.ERROR and "model raised" not in r.message
    assert r.message.startswith("the audit crashed: ZeroDivisionError: inside the reference at "
                                "checks/audits/text_encoder_parity.py:")
    assert "in checks/reference.py:" in r.message and r.location.startswith("checks/reference.py:")


def test_no_reference_is_made_up_for_blocks_it_cannot_read_back(tiny_clip):
    """Custom blocks (open_clip's qk-norm ones, say) carry options the modules do not show: no reference, said so."""
    import copy

    from checks import Skip
    from checks.reference import clean_clip

    clip = copy.deepcopy(tiny_clip[0])
    clip.transformer.resblocks[0] = torch.nn.Identity()
    with pytest.raises(Skip, match="not open_clip's default residual attention blocks"):
        clean_clip(clip)
