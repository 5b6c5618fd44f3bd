"""The foreign zoo: correct models of each prompt-learning family our users bring, none of them ours,
each with the faults its family really has upstream.

The suite's verdict is worth something only on code it did not write. Every clean model here must
come through ``python -m checks --selftest`` with no FAIL and no ERROR (a SKIP says what the family
would have to declare), and every planted fault must FAIL the audit that names it. The models are
written from the structure of the published code (CoOp, CoCoOp, KgCoOp, Efficient-Prompt,
ViFi-CLIP, CLIP-Adapter, ActionCLIP, X-CLIP) in our own words, on the tiny random-weight CLIP.

Every factory takes ``(clip_model, tokenizer, classnames)`` and returns an
:class:`~checks.AuditTarget` with the declarations its family needs; none changes the CLIP model it
is given (a family that modifies CLIP works on its own copy).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ...core import AuditTarget
from . import (adapter, cocoop, context_free, deep_prompts, ensemble, heads, kgcoop, layouts, prefix_postfix,
               template_finetune, xclip)


class Fault(NamedTuple):
    """A planted fault: the audit that must FAIL it, with ``words`` in the finding."""

    make: Callable[..., AuditTarget]
    audit: str
    words: str


class Family(NamedTuple):
    name: str
    title: str  # what the family is, for the table
    clean: Callable[..., AuditTarget]
    faults: tuple[Fault, ...]


FAMILIES: tuple[Family, ...] = (
    Family("cocoop", "CoCoOp: context conditioned on each video, loss from the training forward", cocoop.cocoop, (
        Fault(cocoop.cocoop_batch_mean, "video-batch-independence", "mixes videos"),
        Fault(cocoop.cocoop_aliased_tokens, "buffer-device-sync", "tokenized_prompts"),
        Fault(cocoop.cocoop_permute_kept, "batch-independence", "classes mix inside attention"),
        Fault(cocoop.cocoop_ddp_checkpoint, "checkpoint-strictness", "prefix 'module.'"),
    )),
    Family("kgcoop", "KgCoOp: (logits, score), a loss towards the template's features", kgcoop.kgcoop, (
        Fault(kgcoop.kgcoop_plain_template, "buffer-device-sync", "text_features_old"),
    )),
    Family("prefix-postfix", "Efficient-Prompt: learned tokens around the name, float ids, 16 frames",
           prefix_postfix.prefix_postfix, (
               Fault(prefix_postfix.prefix_postfix_frozen_device, "index-device-consistency", "CPU tensor meets"),
               Fault(prefix_postfix.prefix_postfix_discarded_to, "buffer-device-sync", "prompt_actiontoken"),
           )),
    Family("deep-prompts", "ViFi-CLIP / MaPLe: learned tokens inside CLIP's text blocks", deep_prompts.deep_prompts, (
        Fault(deep_prompts.deep_prompts_plain_tokens, "buffer-device-sync", "tokenized_prompts"),
    )),
    Family("text-finetune", "ViFi-CLIP fine-tuning: CLIP's text tower trains, declared", deep_prompts.text_finetune, (
        Fault(deep_prompts.text_finetune_prompt_optimizer, "gradient-flow", "misses"),
    )),
    Family("clip-adapter", "CLIP-Adapter: template text, a residual adapter on the video feature", adapter.adapter, (
        Fault(adapter.adapter_host_tokens, "index-device-consistency", "CPU tensor meets"),
    )),
    Family("batchnorm-head", "a BatchNorm temporal head", heads.batchnorm_head, (
        Fault(heads.batchnorm_head_batch_statistics, "video-batch-independence", "mixes videos"),
    )),
    Family("bf16-head", "a masked temporal attention in bf16", heads.bf16_head, (
        Fault(heads.bf16_head_mask_dropped, "temporal-padding", "counts the padding"),
    )),
    Family("host-trim", "a head trimming padding with a host read", heads.host_trim, ()),
    Family("numpy-labels", "numpy int64 labels, a path string as meta", layouts.numpy_labels, (
        Fault(layouts.numpy_labels_from_one, "dataset-unpacking", "labels start at 1"),
    )),
    Family("other-buffers", "one buffer of token embeddings, no token_prefix/token_suffix",
           layouts.other_buffer_names, (
               Fault(layouts.other_buffer_names_plain, "buffer-device-sync", "prompt_learner.embeddings"),
           )),
    Family("on-accelerator", "a CoOp port already on the accelerator", layouts.on_accelerator, (
        Fault(layouts.on_accelerator_host_mask, "index-device-consistency", "CPU tensor meets"),
    )),
    # past one prompt per class: template ensembles, text conditioned on each video, prompts with no learned
    # context, fine-tuning on a drawn template; their faults live in what a forward leaves behind, the temporal
    # operation, the precision of the step and the temperature
    Family("template-ensemble", "ActionCLIP evaluation: 16 templates per class, probabilities averaged; a width-3 "
           "convolution over 8 frames", ensemble.template_ensemble, (
               Fault(ensemble.template_ensemble_view, "temporal-operation", "not a convolution of width 3"),
           )),
    Family("video-text", "X-CLIP: bare class names, a prompt generator attending to each video's frames, "
           "encode_video -> (video, frames)", xclip.xclip, (
               Fault(xclip.xclip_cache_left_behind, "forward-state", "cache_text_features"),
               Fault(xclip.xclip_stale_class_list, "class-list-response", "returned logits for"),
               Fault(xclip.xclip_mode_flip, "forward-state", "training mode"),
           )),
    Family("context-free", "a hand-written template per class, no learned context; a temporal shift over the "
           "frames", context_free.context_free, (
               Fault(context_free.context_free_stale_weights, "class-list-response", "returned logits for"),
           )),
    Family("template-finetune", "ActionCLIP training: CLIP's text tower and temperature fine-tuned on one drawn "
           "template per class per step; its own training step", template_finetune.template_finetune, (
               Fault(template_finetune.template_finetune_fp16, "optimizer-step", "rounded away"),
               Fault(template_finetune.template_finetune_fixed_eval_scale, "temperature", "fixed temperature"),
           )),
)

ZOO: dict[str, Family] = {f.name: f for f in FAMILIES}
