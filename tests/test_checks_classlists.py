"""Real class lists: no false alarm on all of UCF101 and Kinetics-400, names with punctuation kept whole."""
import pytest
import torch

from checks import AuditTarget, Status, faults, run_audits
from videocoop.data import KINETICS400, UCF101
from videocoop.model import PromptLearner, VideoFeatureCLIP

# The 9 Kinetics-400 names ending in ')': in "X X X X hurling (sport)." BPE merges ')' and
# '.' into one token '). ', so the name's own last id is not in the prompt.
PARENTHESISED = [c for c in KINETICS400 if c.endswith(")")]


def test_kinetics400_is_torchvisions_list():
    """Ours was written from memory: it must be torchvision's published list, in its order."""
    from torchvision.models.video import R3D_18_Weights

    assert KINETICS400 == R3D_18_Weights.KINETICS400_V1.meta["categories"]
    assert len(PARENTHESISED) == 9


@pytest.mark.parametrize("kwargs", [{}, {"text_pool": "mean"}, {"ctx_init": "a video of a person"}],
                         ids=["eot", "mean", "ctx_init"])
@pytest.mark.parametrize("names", [UCF101, KINETICS400], ids=["ucf101", "kinetics400"])
def test_default_audits_pass_on_complete_class_lists(names, kwargs, tiny_clip):
    torch.manual_seed(0)  # the random context
    results = {r.id: r for r in run_audits(faults.clean(*tiny_clip, names, **kwargs))}
    bad = {i: (r.status, r.message) for i, r in results.items() if r.status.failed}
    assert not bad
    tokenization = results["prompt-tokenization"]
    assert tokenization.status == Status.PASS
    assert tokenization.metrics["merged_with_punctuation"] == (9 if names is KINETICS400 else 0)


@pytest.mark.parametrize("position", ["front", "middle", "end"])
@pytest.mark.parametrize("n_ctx,csc", [(1, False), (4, True)])
def test_every_layout_keeps_parenthesised_names_whole(position, n_ctx, csc, tiny_clip):
    torch.manual_seed(0)
    model = VideoFeatureCLIP(KINETICS400, *tiny_clip, n_ctx=n_ctx, csc=csc, class_token_position=position)
    (r,) = run_audits(AuditTarget(model, KINETICS400, *tiny_clip), ["prompt-tokenization"])
    assert r.status == Status.PASS, (r.message, r.evidence)


@pytest.mark.parametrize("position,expected", [
    ("front", ["hurling", "(", "sport", ").", "x", "x", "x", "x"]),
    ("middle", ["x", "x", "hurling", "(", "sport", ").", "x", "x"]),
    ("end", ["x", "x", "x", "x", "hurling", "(", "sport", ")."]),
])
def test_the_period_merged_into_a_name_moves_with_it(position, expected, tiny_clip):
    """CoOp's layout: ')' stays with its name rather than being split off behind the context."""
    clip_model, tokenizer = tiny_clip
    pl = PromptLearner(["hurling (sport)", "jump"], clip_model, tokenizer, n_ctx=4, class_token_position=position)
    row = pl.tokenized_prompts[0].tolist()
    assert [tokenizer.decode([t]).strip() for t in row[1:-1]] == expected
    assert pl.name_lens == [4, 1] and pl.eots == [9, 7]
    # the written-out prompts tokenize to exactly these ids
    assert torch.equal(tokenizer(pl.prompt_texts)[:, : pl.tokenized_prompts.shape[1]], pl.tokenized_prompts)


def test_middle_with_one_context_slot_is_laid_out_as_front(tiny_clip, classnames):
    """CoOp's middle puts n_ctx // 2 slots before the class: none of one."""
    torch.manual_seed(0)
    model = VideoFeatureCLIP(classnames, *tiny_clip, n_ctx=1, class_token_position="middle")
    (r,) = run_audits(AuditTarget(model, classnames, *tiny_clip), ["prompt-tokenization"])
    assert r.status == Status.PASS, (r.message, r.evidence)
    # the layout says middle, the forward builds the end layout: one slot before the class, not zero
    model = VideoFeatureCLIP(classnames, *tiny_clip, n_ctx=1)
    model.prompt_learner.class_token_position = "middle"
    (r,) = run_audits(AuditTarget(model, classnames, *tiny_clip), ["prompt-tokenization"])
    assert r.status == Status.FAIL and "after 1 of 1 context slots" in r.message
    assert "the layout says 'middle' (0 before it)" in r.message


def test_cut_kinetics_names_still_fail(tiny_clip):
    (r,) = run_audits(faults.truncated_prompts(*tiny_clip, KINETICS400), ["prompt-tokenization"])
    assert r.status == Status.FAIL
    assert "not all in the prompt" in r.message and "cut at the context length 77" in r.message
    assert r.metrics["classes_cut"] > 0
