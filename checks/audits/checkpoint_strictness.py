"""checkpoint-strictness: a checkpoint holds the trainable tensors under their names, and a load restores each."""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from videocoop import InputError
from videocoop.train import check_checkpoint, diff_state, load_checkpoint
from videocoop.train.checkpoint import REQUIRED_FIELDS
from videocoop.utils.readers import load_torch

from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..locations import locate
from ..models import copy_model
from .checkpoint_roundtrip import strict_load, trainable_state

#: Where a checkpoint keeps its tensors: videocoop train's, CoOp's and Dassl's, and the usual others.
TENSOR_KEYS = ("trainable", "state_dict", "model", "model_state_dict", "module")


def tensors_of(obj) -> tuple[dict | None, str]:
    """The dict of tensors a checkpoint holds, and where (``under 'state_dict'``); None when it holds none."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), "its top level"
    for key in TENSOR_KEYS:
        value = obj.get(key) if isinstance(obj, Mapping) else None
        if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return dict(value), f"under {key!r}"
    return None, "nowhere"


def trainable_names(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _fresh(target: AuditTarget):
    """A copy of the model with every trainable tensor re-drawn (seeded), so a load must write each of them. A
    deep copy rather than ``rebuild()``: only the trainable tensors are asked about here (a fresh model's other
    state is checkpoint-roundtrip's), and copying takes 0.1 s where rebuilding random ViT-B-32 took 1.5 s."""
    try:
        fresh = copy_model(target.model)
    except Skip:
        if target.rebuild is None:
            raise
        fresh = target.rebuild()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in fresh.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g).to(p.device, p.dtype))
    return fresh


def restore(target: AuditTarget, state: Mapping, reference: Mapping[str, torch.Tensor] | None) -> tuple[str | None, list]:
    """Load ``state`` into a fresh model with the run's loader (the target's ``load_state``, else strictly); the
    trainable tensors it did not restore: not equal to ``reference``'s (the saving model), or, without one,
    still at their re-drawn values. Returns (the finding or None, evidence)."""
    fresh = _fresh(target)
    drawn = {n: p.detach().clone() for n, p in trainable_names(fresh).items()}
    how = "the target's load_state" if target.load_state is not None else "a strict load"
    try:
        strict_load(fresh, state, target)
    except Exception as e:  # noqa: BLE001: a refused load is the finding
        return f"{how} refused it: {(str(e).splitlines() or [''])[0][:200]}", []
    after = trainable_names(fresh)
    if reference is not None:
        lost = [n for n, p in after.items() if n in reference and not torch.equal(p.detach().cpu(), reference[n].cpu())]
    else:
        lost = [n for n, p in after.items() if torch.equal(p.detach(), drawn[n])]
    if lost:
        return (f"{how} left {len(lost)} of {len(after)} trainable tensor(s) unrestored ({', '.join(lost[:3])}): it drops "
                f"or renames keys without a word (strict=False?)"), []
    return None, [f"{how} restored all {len(after)} trainable tensor(s)"]


def saved_state_cause(target: AuditTarget) -> dict:
    """What the run's own save and load do with the trainable tensors (cached; the cause checkpoint-roundtrip
    defers to): ``cause`` (a sentence, or None), ``evidence``."""
    if "cause:checkpoint" not in target.cache:
        model = target.model
        expected = trainable_names(model)
        state = trainable_state(model, target)
        evidence = [f"the run's save ({'the target save_state' if target.save_state else 'trainable_state_dict'}) "
                    f"writes {len(state)} tensor(s); the model trains {len(expected)}"]
        cause = None
        if target.load_state is None:  # the keys are the model's own: they must be exactly the trainable names
            diff = diff_state(state, expected)
            if diff:
                cause = f"the saved state differs from the trainable tensors: {diff.describe()}"
        if cause is None and state:
            found, more = restore(target, state, {n: p.detach() for n, p in expected.items()})
            evidence += more
            cause = None if found is None else f"the saved state does not come back: {found}"
        target.cache["cause:checkpoint"] = {"cause": cause, "evidence": evidence}
    return target.cache["cause:checkpoint"]


def _ours(ckpt) -> bool:
    """A checkpoint in videocoop train's layout (its required fields), read and checked by videocoop's reader."""
    return isinstance(ckpt, Mapping) and all(k in ckpt for k in REQUIRED_FIELDS)


def named_checkpoint(target: AuditTarget) -> tuple[str | None, list[str]]:
    """The checkpoint the run or target names, read by videocoop's checkpoint reader (``load_checkpoint``: the
    layout ``videocoop train`` writes, typed and finite; ``check_checkpoint``/``diff_state``: its tensors against
    what the run's save writes, a wrapper's prefix named). A target with its own loader may keep another layout:
    its file is read as tensors and plain values (``load_torch``, the reader under ``load_checkpoint``), its tensors
    found, and loaded into a fresh model by that loader, which must write every trainable tensor."""
    ckpt = target.checkpoint
    where = f"checkpoint {ckpt}" if isinstance(ckpt, (str, os.PathLike)) else "the checkpoint the target holds"
    refused = None
    if isinstance(ckpt, (str, os.PathLike)):
        if not os.path.isfile(ckpt):
            return f"{where} does not exist: nothing would be resumed or evaluated", []
        try:
            ckpt = load_checkpoint(ckpt)
        except InputError as e:
            # another layout: the target's own loader may read it; without one the run's reader refuses it (said
            # after what its tensors show, which names the cause: a wrapper's prefix, other keys, other shapes)
            refused = None if target.load_state is not None else f"videocoop's checkpoint reader refuses it: {e.problem}"
            try:
                ckpt = load_torch(ckpt, "a checkpoint: tensors and plain values")
            except InputError as e2:
                return f"{where} cannot be read: {e2.problem}", []
    saved = trainable_state(target.model, target)
    if _ours(ckpt) and target.load_state is None:
        tensors, at = dict(ckpt["trainable"]), "under 'trainable'"
        try:
            check_checkpoint(ckpt, where, trainable=saved)  # the classes are class-order's to compare
        except InputError as e:
            return f"{where}: {e.problem}", [f"{where}: {len(tensors)} tensor(s) {at}"]
    else:
        tensors, at = tensors_of(ckpt)
        if tensors is None:
            keys = sorted(map(str, ckpt))[:6] if isinstance(ckpt, Mapping) else type(ckpt).__name__
            return (f"{where} holds no dict of tensors (keys {keys}; looked at the top level and "
                    f"{', '.join(TENSOR_KEYS)})"), []
        if target.load_state is None and (diff := diff_state(tensors, saved)):
            return (f"{where}: its tensors {at} do not fit the model: {diff.describe()}",
                    [f"{where}: {len(tensors)} tensor(s) {at}"] + ([refused] if refused else []))
    if refused:
        return f"{where}: {refused}", [f"{where}: {len(tensors)} tensor(s) {at}, their keys and shapes the model's"]
    evidence = [f"{where}: {len(tensors)} tensor(s) {at}"]
    if target.load_state is None:
        evidence.append(f"{where}: its keys and shapes are exactly the {len(saved)} tensor(s) the run saves")
    found, more = restore(target, tensors, None)
    if found is not None and target.load_state is not None:  # its own layout: held to what the run's save writes
        diff = diff_state(tensors, saved)
        found = f"{diff.describe()} (against the keys the run's save writes), and {found}" if diff else found
    return (None if found is None else f"{where}: {found}"), evidence + more


@audit(
    "checkpoint-strictness",
    title="Checkpoints hold every trainable tensor, and load strictly",
    problem="a checkpoint loaded with strict=False (CoOp's own loader) silently drops every key it does not expect: "
            "saved from DataParallel/DDP ('module.'), torch.compile ('_orig_mod.') or a wrapper ('model.'), or "
            "missing a learned tensor, it loads without an error and the run evaluates its initial prompts",
    fix="the checkpoint the run or the target names is read and its tensor keys compared with the trainable names "
        "(missing, unexpected, a wrapper's prefix, shapes); the run's own save and load (the target's loader when "
        "declared) restore every trainable tensor of a fresh model",
    remediation="save the unwrapped model's trainable tensors (model.module when wrapped), load with strict=True (or "
                "check load_state_dict's missing_keys and unexpected_keys), strip a wrapper's prefix when loading an "
                "old file",
)
def checkpoint_strictness(target: AuditTarget) -> Outcome:
    """The named checkpoint's keys, and the run's own save and load."""
    model = target.model
    location = locate(getattr(type(model), "load_trainable_state_dict", None) or target.load_state or type(model))
    expected = trainable_names(model)
    if not expected:
        raise Skip("the model trains no tensor, so a checkpoint holds nothing to compare (checkpoint-roundtrip and "
                   "gradient-flow report it)")
    saved = saved_state_cause(target)
    evidence, problems = list(saved["evidence"]), [saved["cause"]] if saved["cause"] else []
    if target.checkpoint is not None:
        found, more = named_checkpoint(target)
        evidence += more
        problems += [found] if found else []
    else:
        evidence.append("no checkpoint named (AuditTarget.checkpoint; python -m checks --resume or --eval-only name "
                        "the run's)")
    metrics = {"trainable": len(expected), "problems": len(problems)}
    if problems:
        return Outcome(Status.FAIL, problems[0], metrics, evidence + problems[1:], location)
    return Outcome(Status.PASS, f"the run's save and load restore all {len(expected)} trainable tensor(s)"
                   + (", and the named checkpoint holds exactly them" if target.checkpoint is not None else ""),
                   metrics, evidence, location)
