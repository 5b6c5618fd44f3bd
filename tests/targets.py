"""Audit targets for ``pytest --audit-target tests.targets:NAME`` (and ``python -m checks --target``).

``coop_clean`` is our own model as training sees it: the tiny random-weight CLIP, fixed
class names, a dataset, our trainer's loops and collate function; every audit passes on it
(``make test`` dogfoods the plugin on it). Every other target is one planted fault from
:mod:`checks.faults` on that same setup; ``PLANTED`` says which audit each is planted for.
"""
from __future__ import annotations

from checks import AuditTarget, faults
from checks.distributed import videocoop_step
from videocoop import train
from videocoop.clip import TINY_MODEL, embed_dim
from videocoop.data import collate_samples

#: The class names every target is built on.
NAMES = faults.NAMES


def planted(fault) -> AuditTarget:
    """``fault(clip, tokenizer, NAMES)`` with what our own training gives the audits: a
    dataset (unless the fault brings its own), the trainer's loops, its collate function."""
    clip, tok = faults.tiny_clip()
    target = fault(clip, tok, NAMES)
    if target.dataset is None:
        target.dataset = faults.Features(len(NAMES), embed_dim(clip), info=faults.info_for(clip))
    target.trainer, target.collate_fn = train, collate_samples
    target.description = f"VideoFeatureCLIP, {TINY_MODEL} random:0, {len(NAMES)} classes, planted fault: {fault.__name__}"
    return target


def coop_clean() -> AuditTarget:
    """Our model, unbroken: every audit passes."""
    target = planted(faults.clean)
    target.distributed_step = videocoop_step  # train's own step under torchrun (run with --audit-spawn)
    target.description = f"VideoFeatureCLIP (videocoop), {TINY_MODEL} random:0, {len(NAMES)} classes, n_ctx 4"
    return target


# --- a target per planted fault (checks.faults.PLANTED: every audit has one) ----------------


def _target(audit_id: str, fault):
    def make() -> AuditTarget:
        return planted(fault)

    make.__name__ = make.__qualname__ = fault.__name__
    make.__doc__ = f"The planted fault of {audit_id}: {(fault.__doc__ or fault.__name__).strip().splitlines()[0]}"
    return make


#: target name -> the audit it is planted for (a fault planted for two audits keeps its first).
PLANTED: dict[str, str] = {}
for _audit_id, _planted in faults.PLANTED.items():
    if _planted.make.__name__ not in PLANTED:
        PLANTED[_planted.make.__name__] = _audit_id
        globals()[_planted.make.__name__] = _target(_audit_id, _planted.make)
