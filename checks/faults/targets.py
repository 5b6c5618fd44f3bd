"""Zero-argument factories for ``python -m checks --target checks.faults:NAME``: the clean
model (with data, or bare), two planted faults, and a factory that fails while building."""
from __future__ import annotations

from ..core import AuditTarget
from .clean import NAMES, clean, tiny_clip
from .data import with_data
from .device import item_loop, plain_tokenized_prompts


def clean_target() -> AuditTarget:
    return with_data(*tiny_clip(), NAMES)


def bare_model():
    return clean(*tiny_clip(), NAMES).model


def bare_model_without_classnames():
    """A bare model carrying no class names (CoOp's PromptLearner keeps none)."""
    model = clean(*tiny_clip(), NAMES).model
    del model.prompt_learner.classnames
    return model


def plain_attribute_target() -> AuditTarget:
    return plain_tokenized_prompts(*tiny_clip(), NAMES)


def item_loop_target() -> AuditTarget:
    return item_loop(*tiny_clip(), NAMES)


def broken_factory():
    """A --target factory that fails while building."""
    raise RuntimeError("checkpoint file not found: ckpt.pt")
