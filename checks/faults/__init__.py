"""Planted faults: each breaks a clean VideoFeatureCLIP the way a real CoOp port does.

Part of the product, not only of the tests: ``python -m checks --selftest`` runs every
audit on the clean model and on its planted fault (:data:`PLANTED`) on the machine at hand,
and the test suite and the pytest plugin import them from here.

Every factory takes ``(clip_model, tokenizer, classnames)`` and returns an
:class:`~checks.AuditTarget`; ``clean`` is the unbroken model, ``with_data`` the unbroken
model with a dataset. Factories never modify the CLIP model they are given (a fault that
needs another CLIP makes its own copy).

One module per audit group, every name importable from here:

- ``clean``: the unbroken model, the tiny CLIP and the class names every fault starts from
- ``device``: tensors left on the CPU, host reads (the device audits)
- ``text``: the prompt learner and text encoder computing the wrong class features
- ``model``: what trains, what a checkpoint keeps, precision, the video path, the logit scale
- ``checkpoints``: checkpoint files from a wrapper, of another shape or absent, and CoOp's strict=False loader
- ``data``: datasets whose items, labels, class lists or features.json go wrong
- ``splits``: splits that leak or are not what they claim (split-integrity)
- ``distributed``: steps of several processes written wrong, and our trainer's (distributed-equivalence)
- ``extraction``: extractors that go wrong the way hand-written ones do
- ``training``: what training sees and repeats (dropout in evaluation, unseeded noise, a scale applied again in
  the loss, probabilities for logits, logits that ignore the video, a schedule at 0, a learning rate of 0)
- ``state``: what a forward leaves behind, another class list, the temporal operation, the temperature
- ``targets``: zero-argument factories for ``python -m checks --target checks.faults:NAME``
- ``zoo``: correct models of the other prompt-learning families our users bring, not built on ours,
  each with its family's own faults (``checks.faults.zoo.FAMILIES``; ``--selftest`` runs them too)
"""
# ruff: noqa: F401  (the names below are re-exported: `checks.faults.NAME` is the contract)
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..core import AuditTarget, Status
from .checkpoints import checkpoint_from_ddp, checkpoint_missing_file, checkpoint_other_shape, coop_strict_false_loader
from .clean import FRAMES, NAMES, SEED, clean, seeded, tiny_clip, with_encoder
from .data import (Features, Sample, checkpoint_other_classes, features_from_other_clip, info_for, labels_from_one,
                   two_field_items, val_split_lacks_a_class, variable_length_tuples, with_data)
from .device import (ArangeRowsEncoder, BoolMaskEncoder, CpuBiasEncoder, CpuCudaOnlyEncoder, CpuEotEncoder,
                     ItemLoopEncoder, ListEotEncoder, SharedPathCpuCopy, arange_without_device, bool_mask_pooling,
                     cpu_bias, eot_index_on_cpu, eot_list_index, item_loop, meta_refused, plain_tokenized_prompts,
                     shared_path_cpu_copy)
from .distributed import distributed_clean, gather_without_grad, no_all_reduce, scalar_gathered, world_size_scaled
from .extraction import (EXTRACT_FRAMES, BGRPreprocess, DevicePathPreprocess, NextFrameSampling, bgr, bgr_frames,
                         extracted, extraction_clean, extraction_untimed, fault_videos, imagenet_normalised,
                         imagenet_stats, next_frames, other_tower, stretched, stretched_resize, untimed_videos)
from .model import (BatchCentred, BatchNormVideo, ContextOnlyCheckpoint, HalfTextPort, MaskIgnored, NoMaskArgument,
                    ScaleWithoutExp, UnnormalisedVideo, batch_mean_centring, batchnorm_video, checkpoint_misses_buffers,
                    checkpoint_misses_temporal, clip_trainable, fp16_context_adam, fp16_context_sgd,
                    fp16_text_float_features, logit_scale_trainable, max_over_padding, no_mask_argument,
                    nothing_trainable, own_clip_copy_trainable, padding_mask_ignored, scale_exponentiated_twice,
                    scale_without_exp, transformer_mask_ignored, unnormalised_video)
from .splits import (WithItems, base_novel_overlap, class_without_videos, duplicate_class_names, kshot_clean,
                     unequal_shots, val_copies_train, val_reextracts_train)
from .state import (CachedText, FixedEvalScale, StaleText, Unordered, class_list_clean, fixed_eval_temperature,
                    temporal_clean, temporal_positions_dropped, text_cache_left_behind, text_cache_stale_classes)
from .targets import (bare_model, bare_model_without_classnames, broken_factory, clean_target, item_loop_target,
                      plain_attribute_target)
from .training import (FunctionalDropout, RandomCrops, SoftmaxForward, UnseededNoise, VideoIgnored, eval_dropout,
                       loss_scaled_twice, loss_summed, random_val_crops, schedule_at_zero, sgd_lr_zero, softmax_in_forward,
                       unseeded_training_noise, video_ignored)
from .text import (FixedLengthEncoder, FullContextEncoder, LastPositionEncoder, NoMaskEncoder, PermuteNoMaskEncoder,
                   PrefixOnlySharedEncoder, WrongEotIdEncoder, coop_front_ids, cut_without_causal_mask,
                   fixed_prompt_length, full_context_positions, last_position, no_causal_mask, permute_no_mask,
                   position_ignored, shared_path_prefix_only, sos_pooling, truncated_prompts)


class Planted(NamedTuple):
    """A planted fault and what its audit must conclude: ``status``, with ``words`` in the finding."""

    make: Callable[..., AuditTarget]
    status: Status
    words: str


#: Every audit's planted fault (``python -m checks --selftest`` and the tests run each one).
PLANTED: dict[str, Planted] = {
    "buffer-device-sync": Planted(plain_tokenized_prompts, Status.FAIL, "plain tensor attribute"),
    "index-device-consistency": Planted(eot_index_on_cpu, Status.FAIL, "copies a tensor to the CPU"),
    "eot-collapse": Planted(sos_pooling, Status.FAIL, "classes indistinguishable"),
    "dataset-unpacking": Planted(two_field_items, Status.FAIL, "`features, label, meta = item` raises"),
    "text-encoder-parity": Planted(permute_no_mask, Status.FAIL, "differs from encode_text"),
    "causal-mask": Planted(no_causal_mask, Status.FAIL, "changed the pooled feature"),
    "batch-independence": Planted(permute_no_mask, Status.FAIL, "classes mix inside attention"),
    "gradient-flow": Planted(clip_trainable, Status.FAIL, "CLIP tensor(s) are trainable"),
    "prompt-tokenization": Planted(truncated_prompts, Status.FAIL, "not all in the prompt"),
    "host-sync": Planted(item_loop, Status.WARN, "Tensor.item()"),
    "checkpoint-roundtrip": Planted(checkpoint_misses_buffers, Status.FAIL, "logits differ"),
    "feature-model-match": Planted(features_from_other_clip, Status.FAIL, "clip_model='ViT-B-16'"),
    "temporal-padding": Planted(max_over_padding, Status.FAIL, "the temporal aggregation counts the padding"),
    "video-batch-independence": Planted(batch_mean_centring, Status.FAIL, "the video path mixes videos"),
    "class-order": Planted(val_split_lacks_a_class, Status.FAIL, "labels shift by 1"),
    "logit-scale": Planted(unnormalised_video, Status.FAIL, "not L2-normalised"),
    "optimizer-step": Planted(fp16_context_adam, Status.FAIL, "turned prompt_learner.ctx inf"),
    "extraction-parity": Planted(bgr_frames, Status.FAIL, "stored features differ from CLIP's"),
    "determinism": Planted(eval_dropout, Status.FAIL, "dropout at"),
    "learning-signal": Planted(loss_scaled_twice, Status.FAIL, "scales the logits again"),
    "split-integrity": Planted(val_copies_train, Status.FAIL, "in two splits"),
    "distributed-equivalence": Planted(world_size_scaled, Status.FAIL, "the world size"),
    "checkpoint-strictness": Planted(checkpoint_misses_temporal, Status.FAIL, "missing temporal."),
    "forward-state": Planted(text_cache_left_behind, Status.FAIL, "text_cache"),
    "class-list-response": Planted(text_cache_stale_classes, Status.FAIL, "returned logits for"),
    "temporal-operation": Planted(temporal_positions_dropped, Status.FAIL, "ignores frame order"),
    "temperature": Planted(fixed_eval_temperature, Status.FAIL, "fixed temperature"),
}

#: Further planted faults, each under the audit whose job its root cause is (the self-test runs them after
#: PLANTED's, and no other audit may FAIL for them: tests/test_checks_causes.py).
ALSO_PLANTED: tuple[tuple[str, Planted], ...] = (
    ("determinism", Planted(unseeded_training_noise, Status.FAIL, "two seeded trainings differ")),
    ("determinism", Planted(random_val_crops, Status.FAIL, "differs from read to read")),
    ("learning-signal", Planted(loss_summed, Status.FAIL, "summed over the batch")),
    ("learning-signal", Planted(softmax_in_forward, Status.FAIL, "returns probabilities")),
    ("learning-signal", Planted(video_ignored, Status.FAIL, "does not read the video")),
    ("learning-signal", Planted(schedule_at_zero, Status.FAIL, "holds the learning rate at 0")),
    ("split-integrity", Planted(val_reextracts_train, Status.FAIL, "near-identical")),
    ("split-integrity", Planted(duplicate_class_names, Status.FAIL, "repeat once '_' reads as a space")),
    ("split-integrity", Planted(class_without_videos, Status.FAIL, "has no videos")),
    ("split-integrity", Planted(base_novel_overlap, Status.FAIL, "are base classes too")),
    ("split-integrity", Planted(unequal_shots, Status.FAIL, "not 2 per class")),
    ("distributed-equivalence", Planted(gather_without_grad, Status.FAIL, "differ from one")),
    ("distributed-equivalence", Planted(no_all_reduce, Status.FAIL, "not all-reduced")),
    ("distributed-equivalence", Planted(scalar_gathered, Status.FAIL, "differ from one")),
    ("checkpoint-strictness", Planted(checkpoint_from_ddp, Status.FAIL, "prefix 'module.'")),
    ("checkpoint-strictness", Planted(checkpoint_missing_file, Status.FAIL, "does not exist")),
    ("checkpoint-strictness", Planted(checkpoint_other_shape, Status.FAIL, "has shape [8,")),
    ("checkpoint-strictness", Planted(coop_strict_false_loader, Status.FAIL, "unrestored")),
    ("optimizer-step", Planted(sgd_lr_zero, Status.FAIL, "changed no trainable tensor")),
)

#: Audits whose clean case needs a target of its own (the default clean model's data names no
#: source videos, so extraction-parity has nothing to compare there: SKIP; it declares no other class list
#: and has no temporal head).
CLEAN: dict[str, Callable[..., AuditTarget]] = {"extraction-parity": extraction_clean,
                                                "distributed-equivalence": distributed_clean,
                                                "class-list-response": class_list_clean,
                                                "temporal-operation": temporal_clean}

#: The runner's own planted fault: a model that raises on its own data is a FAIL naming its
#: exception (``(audit it runs under, fault)``), never an ERROR.
RUNNER_FAULT = ("logit-scale", Planted(fp16_text_float_features, Status.FAIL, "the model raised RuntimeError"))
