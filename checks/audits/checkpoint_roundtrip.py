"""checkpoint-roundtrip: the saved trainable state restores the same model."""
from __future__ import annotations

import os
import tempfile

import torch

from ..causes import deferred
from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import home, probe_batch
from ..locations import locate
from ..models import copy_model, run_model


def trainable_state(model, target: AuditTarget | None = None) -> dict[str, torch.Tensor]:
    """What the model saves: the target's ``save_state``, its ``trainable_state_dict()``, else its
    trainable parameters."""
    if target is not None and target.save_state is not None:
        return target.save_state(model)
    if hasattr(model, "trainable_state_dict"):
        return model.trainable_state_dict()
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def strict_load(model, state, target: AuditTarget | None = None) -> None:
    """Load as the run does (the target's ``load_state``), else under a strict check: exactly the
    trainable keys, no more, no fewer."""
    if target is not None and target.load_state is not None:
        target.load_state(model, state)
        return
    if hasattr(model, "load_trainable_state_dict"):
        model.load_trainable_state_dict(state, strict=True)
        return
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise RuntimeError(f"strict load: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(state, strict=False)


@audit(
    "checkpoint-roundtrip",
    title="Saved and reloaded state gives identical logits",
    problem="a checkpoint that misses a learned tensor (or a load that silently skips keys) restores a "
            "different model: the 1% accuracy after reload that CoOp ports report",
    fix="the trainable state saved to a file and strictly loaded into a fresh model gives identical logits",
    remediation="save every trainable tensor (model.trainable_state_dict()), load with strict=True, and "
                "keep prefix/suffix buffers derived from the class names, not from the checkpoint",
    needs=("forward",),
)
def checkpoint_roundtrip(target: AuditTarget) -> Outcome:
    """Save, scramble a copy's trainable tensors, strictly reload, compare logits."""
    model = target.model
    location = locate(getattr(type(model), "trainable_state_dict", type(model)))
    state = trainable_state(model, target)
    if not state:
        return Outcome(Status.FAIL, "the checkpoint holds no tensor: nothing the model learns would be saved",
                       {"saved_tensors": 0}, ["trainable state: 0 tensors (no parameter requires grad?)"], location)
    if target.rebuild is not None:  # a new model: buffers the checkpoint misses keep their initial values
        fresh, made = target.rebuild(), "fresh model: rebuilt by the target's factory"
    else:  # a copy already holds every unsaved buffer, so only missing trainable tensors can show
        fresh, made = copy_model(model), ("fresh model: a deep copy (no factory known), so non-parameter state "
                                          "missing from the checkpoint cannot show")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in fresh.parameters():
            if p.requires_grad:  # a fresh model: other values in every learned tensor
                p.add_(torch.randn(p.shape, generator=g).to(p.device, p.dtype))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trainable.pt")
        torch.save(state, path)
        size = os.path.getsize(path)
        loaded = torch.load(path, weights_only=True, map_location=lambda s, _: s)
    how = ("the target's save_state and load_state" if target.save_state or target.load_state
           else "trainable_state_dict / load_trainable_state_dict" if hasattr(model, "trainable_state_dict")
           else "the trainable parameters, loaded strictly")
    evidence = [f"saved {len(state)} tensor(s) ({size} bytes): {', '.join(list(state)[:4])}"
                + (" ..." if len(state) > 4 else ""), made + "; every trainable tensor re-drawn before loading",
                f"saved and loaded with {how}"]
    metrics = {"saved_tensors": len(state), "bytes": size}
    try:
        strict_load(fresh, loaded, target)
    except Exception as e:  # noqa: BLE001: a refused load is the finding
        if (cause := deferred(target, "checkpoint_keys", what="the round trip")) is not None:
            return cause
        return Outcome(Status.FAIL, f"strict load refused the checkpoint: {str(e).splitlines()[0]}",
                       metrics, evidence, location)
    x, _, _ = probe_batch(target, 4)
    a = run_model(target, x)  # in eval mode, the audited model's own modes left as they were
    b = run_model(target, x.to(home(fresh)), model=fresh)
    b = b.to(a.device)
    diff = float((a - b).abs().max())
    metrics["max_abs_logit_diff"] = diff
    evidence.append(f"logits {list(a.shape)}: max |original - reloaded| = {diff:.3g}")
    if not torch.equal(a, b):
        if (cause := deferred(target, "nondeterministic", "checkpoint_keys", what="the reloaded model's logits")):
            return cause
        return Outcome(Status.FAIL, f"reloaded model's logits differ by up to {diff:.3g}: the checkpoint misses "
                       f"something the model learned", metrics, evidence, location)
    return Outcome(Status.PASS, f"identical logits after a strict reload of {len(state)} tensor(s)",
                   metrics, evidence, location)
