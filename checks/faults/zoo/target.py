"""How a zoo model becomes an :class:`~checks.AuditTarget`: what a user of that family hands the
suite (the model, its CLIP, tokenizer and data) and the declarations its family needs."""
from __future__ import annotations

from videocoop.clip import TINY_MODEL

from ...core import AuditTarget


def make_target(model, names, clip, tok, dataset=None, description: str = "", **declared) -> AuditTarget:
    """An AuditTarget of ``model`` on the tiny CLIP, with ``declared`` set (the family's contract)."""
    target = AuditTarget(model, names, clip, tok, dataset=dataset, clip_name=TINY_MODEL, weights="random:0",
                         description=description)
    for name, value in declared.items():
        if hasattr(target, name):  # before the contract existed, a declaration had nowhere to go
            setattr(target, name, value)
    return target
