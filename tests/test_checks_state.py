"""The audits of issue 23, one case at a time: what a forward leaves behind (forward-state), another class list
(class-list-response), the temporal operation (temporal-operation), training vs evaluation temperature
(temperature). Their clean cases and planted faults on our own model are checks.faults.state (--selftest); the
zoo's families are run whole by tests/test_checks_zoo.py."""
import dataclasses

import torch

from checks import Status, faults, run_audits
from checks.classes import rebuilt_for_classes
from checks.faults.zoo import context_free, ensemble, template_finetune, xclip
from videocoop.model import VideoFeatureCLIP

NAMES = faults.NAMES


def one(target, audit_id):
    (r,) = run_audits(target, [audit_id])
    return r


# --- forward-state ------------------------------------------------------------------------------------------------


def test_a_cache_left_behind_is_forward_states_finding_not_buffer_device_syncs(tiny_clip):
    """The preflight's probe forward runs on the model handed over and fills its cache; the device audits copy the
    model as handed over (before it), so only forward-state, which runs a forward first, sees the cache stranded."""
    target = xclip.xclip_cache_left_behind(*tiny_clip, NAMES)
    results = {r.id: r for r in run_audits(target, ["buffer-device-sync", "index-device-consistency", "forward-state"])}
    assert target.model.cache_text_features is not None  # the audits' own forwards filled it on the model itself
    assert results["buffer-device-sync"].status == Status.PASS, results["buffer-device-sync"].message
    assert results["index-device-consistency"].status == Status.PASS
    r = results["forward-state"]
    assert r.status == Status.FAIL and "cache_text_features [5, 32] float32 on cpu, a plain attribute" in r.message


class EvalsItselfInTraining(xclip.XClipVideo):
    """Puts the whole model in eval mode for its text in training, and never back."""

    def cached_text(self):
        self.eval()
        return self.class_text()


def test_forward_state_compares_modes_in_both_modes(tiny_clip):
    r = one(xclip.xclip_mode_flip(*tiny_clip, NAMES), "forward-state")
    assert r.status == Status.FAIL and r.metrics["eval_mode_flips"] > 0 and r.metrics["train_mode_flips"] == 0
    r = one(xclip._target(EvalsItselfInTraining, *tiny_clip, NAMES), "forward-state")
    assert r.status == Status.FAIL and "after model.train() and one forward" in r.message


def test_forward_state_passes_a_cache_kept_right(tiny_clip):
    """A cache registered as a buffer moves with the model: named in the evidence, not a finding."""
    r = one(xclip.xclip_stale_class_list(*tiny_clip, NAMES), "forward-state")
    assert r.status == Status.PASS, r.message


# --- class-list-response ------------------------------------------------------------------------------------------


def test_rebuilt_for_classes_carries_class_specific_context_by_class(tiny_clip):
    """Our model with class-specific context, built per class list: the rows of ctx follow the classes."""
    clip, tok = tiny_clip
    model = faults.seeded(VideoFeatureCLIP, NAMES, clip, tok, n_ctx=4, csc=True)
    build = rebuilt_for_classes(lambda names: VideoFeatureCLIP(names, clip, tok, n_ctx=4, csc=True), NAMES)
    target = faults.clean(clip, tok, NAMES)
    target.model, target.for_classes = model, build
    r = one(target, "class-list-response")
    assert r.status == Status.PASS and r.metrics["max_rel_diff"] < 1e-5, (r.message, r.evidence)
    moved = build(model, ["ride_bike", "ApplyEyeMakeup"])
    assert torch.equal(moved.prompt_learner.ctx, model.prompt_learner.ctx[[4, 0]])


class OldOrder(context_free.TemplateVideo):
    """Takes a new class list but keeps scoring in the order of the old one it was given first."""

    def set_classes(self, tokens):
        if not hasattr(self, "first"):
            self.first = tokens
        self.class_tokens = tokens.flip(0) if torch.equal(tokens, self.first) else tokens


def test_class_list_response_follows_the_order(tiny_clip):
    r = one(context_free._target(OldOrder, *tiny_clip, NAMES), "class-list-response")
    assert r.status == Status.FAIL and "the scores do not follow the new list" in r.message, r.message


def test_class_list_response_skips_a_fixed_class_list_saying_what_to_declare(tiny_clip):
    r = one(faults.with_data(*tiny_clip, NAMES), "class-list-response")
    assert r.status == Status.SKIP and "declare AuditTarget(for_classes=lambda model, classnames: ...)" in r.message


# --- temporal-operation -------------------------------------------------------------------------------------------


def test_a_convolution_through_a_view_mixes_frames_and_channels(tiny_clip):
    r = one(ensemble.template_ensemble_view(*tiny_clip, NAMES), "temporal-operation")
    assert r.status == Status.FAIL and "not a convolution of width 3 over the frames, which reaches 1" in r.message
    assert r.metrics["own_reach"] == 4  # the middle frame of 8 reached every frame
    clean = one(ensemble.template_ensemble(*tiny_clip, NAMES), "temporal-operation")
    assert clean.status == Status.PASS and clean.metrics["own_reach"] == clean.metrics["stepped_reach"] == 1


def test_an_identity_at_init_is_judged_after_a_random_step(tiny_clip):
    """Our temporal transformer is the identity on its initial weights (a zero-initialised output): frames neither
    mix nor care about order until its trainable tensors move."""
    clip, tok = tiny_clip
    target = faults.clean(clip, tok, NAMES, temporal_agg="transformer")
    target.temporal_kind = "attention"
    r = one(target, "temporal-operation")
    assert r.status == Status.PASS and r.metrics["own_reach"] == 0 and r.metrics["stepped_reach"] > 0, r.evidence
    target.temporal_kind = "pointwise"  # declared pointwise: after a step it reaches other frames
    r = one(target, "temporal-operation")
    assert r.status == Status.FAIL and "not a pointwise operation" in r.message


def test_an_order_free_head_that_uses_positions_fails(tiny_clip):
    target = faults.temporal_clean(*tiny_clip, NAMES)
    target.temporal_kind = "attention-unordered"
    r = one(target, "temporal-operation")
    assert r.status == Status.FAIL and "the head uses frame positions" in r.message


def test_temporal_operation_skips_without_a_head_or_a_kind(tiny_clip):
    r = one(faults.with_data(*tiny_clip, NAMES), "temporal-operation")
    assert r.status == Status.SKIP and "declares no temporal head" in r.message
    target = faults.temporal_clean(*tiny_clip, NAMES)
    target.temporal_kind = None
    r = one(target, "temporal-operation")
    assert r.status == Status.SKIP and "declare AuditTarget(temporal_kind=...)" in r.message


# --- temperature --------------------------------------------------------------------------------------------------


def test_a_fixed_evaluation_temperature_passes_when_declared(tiny_clip):
    target = template_finetune.template_finetune_fixed_eval_scale(*tiny_clip, NAMES)
    target.eval_temperature = 100.0
    r = one(target, "temperature")
    assert r.status == Status.PASS and "as declared (AuditTarget(eval_temperature=100))" in r.message


class TwiceInTraining(VideoFeatureCLIP):
    def logits(self, video, text):
        return (2.0 if self.training else 1.0) * super().logits(video, text)


def test_training_logits_at_another_scale_fail_with_the_ratio(tiny_clip):
    clip, tok = tiny_clip
    target = faults.clean(clip, tok, NAMES)
    target.model = faults.seeded(TwiceInTraining, NAMES, clip, tok, n_ctx=4)
    r = one(target, "temperature")
    assert r.status == Status.FAIL and "training applies 2 x the temperature evaluation applies" in r.message


def test_a_frozen_scale_evaluation_ignores_warns(tiny_clip):
    """Training reads a frozen logit_scale, evaluation a constant: equal while the constant is exp(logit_scale)."""
    target = template_finetune.template_finetune_fixed_eval_scale(*tiny_clip, NAMES)
    target.model.logit_scale.requires_grad_(False)
    target.trainable_clip = ("text.*",)
    r = one(target, "temperature")
    assert r.status == Status.WARN and "is frozen now" in r.message


# --- the model as handed over ------------------------------------------------------------------------------------


def test_the_models_own_state_is_left_as_handed_over_for_the_device_audits(tiny_clip):
    """The snapshot the device audits copy is taken before any forward of the audits' own."""
    target = xclip.xclip_cache_left_behind(*tiny_clip, NAMES)
    run_audits(target, ["logit-scale"])  # its preflight runs the model itself
    assert getattr(target.cache["handed_over"], "cache_text_features", None) is None
    assert dataclasses.is_dataclass(target)
