"""Past one prompt per class (issue 23): template ensembles, text conditioned on each video, prompts with no
learned context, a declared training step: the contract, and the audits that were before it on these models
(tests/test_checks_state.py: the audits of what a forward leaves behind, another class list, the temporal operation
and the temperature).

The zoo's families (checks.faults.zoo: template-ensemble, video-text, context-free, template-finetune) are run
whole by tests/test_checks_zoo.py; here, what each contract addition and each new audit decides, one case at a
time. docs/studies/zoo_before_23.txt is the same zoo on the audits before: the text audits SKIP on these
families, logit-scale passes their probabilities on a bound any probabilities meet, and 7 of their faults are
missed."""

import pytest
import torch
import torch.nn.functional as F

from checks import Status, faults, run_audits
from checks.faults import zoo
from checks.faults.zoo import context_free, ensemble, template_finetune, xclip
from videocoop import VideoCoopError
from videocoop.clip import embed_dim

NAMES = faults.NAMES


def one(target, audit_id):
    (r,) = run_audits(target, [audit_id])
    return r


# --- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,words", [
    ("combine", "mean", "choose one of features, probabilities, max"),
    ("output", "softmax", "choose one of logits, probabilities"),
    ("temporal_kind", "conv:2", "conv:K with K an odd width"),
    ("prompts_per_class", 0, "an int >= 1"),
])
def test_a_declaration_naming_no_option_is_refused_naming_them(field, value, words, tiny_clip):
    target = ensemble.template_ensemble(*tiny_clip, NAMES)
    setattr(target, field, value)
    with pytest.raises(VideoCoopError, match=words.replace("(", r"\(").replace(")", r"\)")):
        run_audits(target, ["host-sync"])


def test_an_ensemble_given_flat_without_its_count_skips_naming_prompts_per_class(tiny_clip):
    """ActionCLIP's ids come as [16 x n_cls, L]: the text audits say what to declare (they crashed before)."""
    target = ensemble.template_ensemble(*tiny_clip, NAMES)
    target.prompts_per_class, target.combine = 1, None
    target.token_ids = lambda m: m.template_ids.reshape(-1, m.template_ids.shape[-1])  # template-major
    for r in run_audits(target, ["text-encoder-parity", "eot-collapse", "prompt-tokenization"]):
        assert r.status == Status.SKIP and "declare AuditTarget(prompts_per_class=16)" in r.message, r.message
    target = ensemble.template_ensemble(*tiny_clip, NAMES)  # declared, the flat layout is read as template-major
    target.token_ids = lambda m: m.template_ids.reshape(-1, m.template_ids.shape[-1])
    assert one(target, "prompt-tokenization").status == Status.PASS


def test_prompt_tokenization_reads_every_prompt_of_an_ensemble(tiny_clip):
    """A name cut in one template of 16 is found, and named by its template."""
    clip, tok = tiny_clip
    target = ensemble.template_ensemble(clip, tok, NAMES)
    ids = target.model.template_ids.clone()
    ids[5, 1, 2:] = 0  # template 6 of 'jump': the name cut away, the EOT right after SOS
    ids[5, 1, 1] = ids.max()
    target.model.template_ids = ids
    r = one(target, "prompt-tokenization")
    assert r.status == Status.FAIL and "'jump' (prompt 6 of 16): its 1 tokens are not all in the prompt" in r.message
    assert r.metrics["prompts_per_class"] == 16


def test_context_free_prompts_skip_naming_token_ids_and_are_audited_with_them(tiny_clip):
    """Without a prompt learner the text audits ask for token_ids and encode_text; given them, the ids' embeddings
    in the clean CLIP are the prompts, and no position is held against a layout with no context slots."""
    target = context_free.context_free(*tiny_clip, NAMES)
    r = one(target, "prompt-tokenization")
    assert r.status == Status.PASS and "the layout states no position" in r.message
    assert any("no learned context" in e for e in one(target, "eot-collapse").evidence)
    target = context_free.context_free(*tiny_clip, NAMES)
    target.token_ids = None
    r = one(target, "eot-collapse")
    assert r.status == Status.SKIP and "for prompts with no learned context" in r.message and "token_ids=" in r.message


def test_probabilities_undeclared_are_learning_signals_finding_and_declared_are_judged(tiny_clip):
    """Rows that are probabilities are detected: undeclared, learning-signal FAILs them (cross-entropy softmaxes
    them again) saying how to declare them, and logit-scale defers to it; declared, both judge them as such."""
    target = ensemble.template_ensemble(*tiny_clip, NAMES)
    target.output = None
    results = {r.id: r for r in run_audits(target, ["learning-signal", "logit-scale"])}
    assert results["learning-signal"].status == Status.FAIL
    assert "declares AuditTarget(output='probabilities')" in results["learning-signal"].message
    assert results["logit-scale"].status == Status.SKIP and "deferred to learning-signal" in results["logit-scale"].message
    target = ensemble.template_ensemble(*tiny_clip, NAMES)  # declared
    results = {r.id: r for r in run_audits(target, ["learning-signal", "logit-scale"])}
    assert results["learning-signal"].status == Status.PASS, results["learning-signal"].message
    r = results["logit-scale"]
    assert r.status == Status.PASS and r.metrics["output"] == "probabilities", r.message
    assert any("declared (AuditTarget(output='probabilities'))" in e for e in r.evidence)


def test_the_default_loss_of_declared_probabilities_is_their_nll(tiny_clip):
    """Declared probabilities train on their NLL; undeclared, the default stays the cross-entropy a training loop
    applies (which softmaxes them again: a fault when it is not the design)."""
    from checks import contract

    target = ensemble.template_ensemble(*tiny_clip, NAMES)
    x, y = torch.randn(2, 8, embed_dim(tiny_clip[0]), generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3])
    with torch.no_grad():
        p = target.model.eval()(x)  # [2, n_cls], rows summing to 1
        assert torch.allclose(contract.loss(target, target.model, x, y), F.nll_loss(p.log(), y))
        target.output = None
        assert torch.allclose(contract.loss(target, target.model, x, y), F.cross_entropy(p, y))


# --- logit-scale past one prompt per class -----------------------------------------------------------------------


def test_logit_scale_holds_averaged_probabilities_to_their_combination(tiny_clip):
    """The old audit passed these probabilities on |p| <= exp(logit_scale), a bound any probabilities meet; now the
    wrong combination declared fails, and a model that cannot be recomputed skips saying what to declare."""
    target = ensemble.template_ensemble(*tiny_clip, NAMES)
    target.combine = "features"  # the model averages probabilities, not features
    r = one(target, "logit-scale")
    assert r.status == Status.FAIL and "probabilities differ from exp(clip_model.logit_scale) x cosine" in r.message
    target = ensemble._target(ensemble.ShiftConv1d, *tiny_clip, NAMES)
    target.model = faults.seeded(PairEnsemble, *tiny_clip, NAMES)
    target.encode_video = None  # the pair, and no declaration saying which element
    r = one(target, "logit-scale")
    assert r.status == Status.SKIP and "the output is probabilities" in r.message
    assert "declare AuditTarget(encode_video=lambda model, features, mask: model.encode_video(features)[0])" in r.message


class PairEnsemble(ensemble.EnsembleVideo):
    def encode_video(self, features):
        return super().encode_video(features), features  # (video, frames), as X-CLIP's

    def forward(self, features):
        video = self.encode_video(features)[0]
        logits = self.logit_scale.exp() * torch.einsum("be,kne->bkn", video, self.class_text())
        return logits.softmax(dim=-1).mean(dim=1)


class UnnormalisedVideoText(xclip.XClipVideo):
    def forward(self, features, mask=None):
        video, frames = self.encode_video(features, mask)
        text = self.condition(self.class_text(), frames, mask)  # not normalised
        return self.logit_scale.exp() * torch.einsum("bd,bkd->bk", F.normalize(video, dim=-1), text)


def test_logit_scale_judges_text_conditioned_on_each_video_per_video(tiny_clip):
    """The encode_video pair crashed the old audit; without the per-video text it blamed normalisation for the
    wrong reason. Declared, the clean model passes per video and a text left unnormalised fails."""
    r = one(xclip.xclip(*tiny_clip, NAMES), "logit-scale")
    assert r.status == Status.PASS and any("(the declared text_features, per video)" in e for e in r.evidence)
    undeclared = xclip.xclip(*tiny_clip, NAMES)
    undeclared.encode_video = None
    r = one(undeclared, "logit-scale")  # logits: the bound is all that can be checked, and the evidence says why
    assert r.status == Status.PASS and "the bound holds" in r.message
    assert any("model.encode_video(features, mask)[0]" in e for e in r.evidence), r.evidence
    bad = xclip._target(UnnormalisedVideoText, *tiny_clip, NAMES)
    r = one(bad, "logit-scale")
    assert r.status == Status.FAIL and "the features are not L2-normalised before the product" in r.message


# --- optimizer-step through the declared training step -------------------------------------------------------------


def masters_step(model, features, labels, mask, optimizer):
    """The fp32 master weights trick: the optimiser holds fp32 copies; the fp16 weights are written from them."""
    optimizer.zero_grad()
    model.zero_grad(set_to_none=True)
    value = template_finetune.loss(model, features, labels, mask)
    value.backward()
    for p, master in zip(model.masters_of, optimizer.param_groups[0]["params"]):
        master.grad = p.grad.float()
    optimizer.step()
    with torch.no_grad():
        for p, master in zip(model.masters_of, optimizer.param_groups[0]["params"]):
            p.copy_(master)
    return value


def masters_optimizer(model):
    model.masters_of = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([p.detach().float().clone().requires_grad_(True) for p in model.masters_of], lr=5e-6,
                             betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)


def test_fp16_weights_stepped_without_master_weights_fail_and_with_them_pass(tiny_clip):
    r = one(template_finetune.template_finetune_fp16(*tiny_clip, NAMES), "optimizer-step")
    assert r.status == Status.FAIL and "rounded away" in r.message and r.metrics["lost_share"] > 0.5, r.message
    target = template_finetune.template_finetune_fp16(*tiny_clip, NAMES)
    target.train_step, target.make_optimizer = masters_step, masters_optimizer
    r = one(target, "optimizer-step")
    assert r.status == Status.PASS and "no update rounds to half precision" in r.evidence[-1], (r.message, r.evidence)


def test_without_a_declared_step_half_tensors_warn_with_the_share_measured(tiny_clip):
    r = one(zoo.heads.bf16_head(*tiny_clip, NAMES), "optimizer-step")
    assert r.status == Status.WARN and "of the updated values unchanged" in r.message
    assert any("declare AuditTarget(train_step=...)" in e for e in r.evidence)


# --- the zoo's new families on the audits that already were ---------------------------------------------------------


def test_fine_tuning_on_a_drawn_template_passes_gradient_flow(tiny_clip):
    """CLIP's text tower and temperature train by design (declared), and the buffer recording the drawn templates is
    updated by the training forward, not by the step."""
    r = one(template_finetune.template_finetune(*tiny_clip, NAMES), "gradient-flow")
    assert r.status == Status.PASS and r.metrics["clip_declared_trainable"] > 0 and r.metrics["buffers_updated"] == 1
    assert any("drawn" in e and "by design" in e for e in r.evidence)
