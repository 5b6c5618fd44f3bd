"""Audit targets for ``pytest --audit-target tests.targets:NAME`` (and ``python -m checks --target``).

``coop_clean`` is our own model as training sees it: the tiny random-weight CLIP, fixed
class names, a dataset, our trainer's loops and collate function; every audit passes on it
(``make test`` dogfoods the plugin on it). Every other target is one planted fault from
:mod:`faults` on that same setup; ``PLANTED`` says which audit each is planted for.
"""
from __future__ import annotations

import functools
import warnings

from checks import AuditTarget
from tests import faults  # the planted faults; when they move into the package (issue 10): from checks import faults
from videocoop import train
from videocoop.clip import TINY_MODEL, embed_dim, load_clip
from videocoop.data import collate_samples

#: The class names every target is built on.
NAMES = ["ApplyEyeMakeup", "jump", "brush_hair", "PlayingCello", "ride_bike"]


@functools.lru_cache(maxsize=1)
def _tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_MODEL, seed=0)


def planted(fault) -> AuditTarget:
    """``fault(clip, tokenizer, NAMES)`` with what our own training gives the audits: a
    dataset (unless the fault brings its own), the trainer's loops, its collate function."""
    clip, tok = _tiny()
    target = fault(clip, tok, NAMES)
    if target.dataset is None:
        target.dataset = faults.Features(len(NAMES), embed_dim(clip), info=faults.info_for(clip))
    target.trainer, target.collate_fn = train, collate_samples
    target.description = f"VideoFeatureCLIP, {TINY_MODEL} random:0, {len(NAMES)} classes, planted fault: {fault.__name__}"
    return target


def coop_clean() -> AuditTarget:
    """Our model, unbroken: every audit passes."""
    target = planted(faults.clean)
    target.description = f"VideoFeatureCLIP (videocoop), {TINY_MODEL} random:0, {len(NAMES)} classes, n_ctx 4"
    return target


# --- one planted fault per audit (the fault breaks more than its audit where noted) -------

def plain_tokenized_prompts() -> AuditTarget:
    """tokenized_prompts a plain attribute (also index-device-consistency, host-sync WARN)."""
    return planted(faults.plain_tokenized_prompts)


def eot_index_on_cpu() -> AuditTarget:
    """The EOT index moved to the CPU in the encoder (also crashes the training-path audits)."""
    return planted(faults.eot_index_on_cpu)


def sos_pooling() -> AuditTarget:
    """Every class pools its SOS token (also text-encoder-parity and the training-path audits)."""
    return planted(faults.sos_pooling)


def two_field_items() -> AuditTarget:
    """A dataset yielding (features, label): only dataset-unpacking fails."""
    return planted(faults.two_field_items)


def permute_no_mask() -> AuditTarget:
    """CoOp's permute kept, the causal mask dropped (fails five audits)."""
    return planted(faults.permute_no_mask)


def last_position() -> AuditTarget:
    """Pools the last position instead of the EOT (also causal-mask and the training path)."""
    return planted(faults.last_position)


def no_causal_mask() -> AuditTarget:
    """The transformer run without the causal mask (also text-encoder-parity and others)."""
    return planted(faults.no_causal_mask)


def clip_trainable() -> AuditTarget:
    """CLIP's text tower left trainable: only gradient-flow fails."""
    return planted(faults.clip_trainable)


def truncated_prompts() -> AuditTarget:
    """Prompts silently truncated by the tokenizer (also warns in eot-collapse)."""
    return planted(faults.truncated_prompts)


def item_loop() -> AuditTarget:
    """The seed's per-class .item() mean pooling: host-sync WARNs (and the training path crashes)."""
    return planted(faults.item_loop)


def checkpoint_misses_temporal() -> AuditTarget:
    """The checkpoint forgets the temporal module: only checkpoint-roundtrip fails."""
    return planted(faults.checkpoint_misses_temporal)


def features_from_other_clip() -> AuditTarget:
    """features.json names another CLIP: only feature-model-match fails."""
    return planted(faults.features_from_other_clip)


#: target name -> the audit it is planted for.
PLANTED = {
    "plain_tokenized_prompts": "buffer-device-sync",
    "eot_index_on_cpu": "index-device-consistency",
    "sos_pooling": "eot-collapse",
    "two_field_items": "dataset-unpacking",
    "last_position": "text-encoder-parity",
    "permute_no_mask": "batch-independence",
    "no_causal_mask": "causal-mask",
    "clip_trainable": "gradient-flow",
    "truncated_prompts": "prompt-tokenization",
    "item_loop": "host-sync",
    "checkpoint_misses_temporal": "checkpoint-roundtrip",
    "features_from_other_clip": "feature-model-match",
}
