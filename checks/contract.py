"""The contract between the audits and a model that is not CoOp-shaped.

The CoOp layout is the default: ``model(features[, mask])`` gives logits, the cross-entropy of
them is the training loss, ``model.prompt_learner()`` the prompts, ``tokenized_prompts`` their ids,
``model.text_encoder(prompts, ids)`` the class features. A target *declares* what differs, with
plain values or callables on :class:`~checks.AuditTarget` that take the model first (the audits
call them on copies they move or train). Every audit states what it ``needs``; the
:func:`preflight` resolves each need once per run and an audit whose needs the target does not
meet SKIPs, naming what to declare. A contract gap is never an ERROR and never a FAIL; an exception
the model raises on inputs it should take still is (the runner names it).

The declarations and what each replaces are listed in :data:`DECLARATIONS`; docs/foreign_models.md
shows them per family.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from .core import AuditTarget, Skip

#: Declaration -> what it says, and the CoOp layout's default when it is not declared.
DECLARATIONS = {
    "logits": "logits(model, features [B, T, D], mask [B, T] | None) -> [B, n_cls]; default model(features[, mask])",
    "loss": "loss(model, features, labels [B], mask | None) -> scalar, the training objective; default the "
            "cross-entropy of the logits",
    "prompts": "prompts(model, videos [B, T, D] | None) -> [n_cls, L, width], or [B, n_cls, L, width] conditioned on "
               "each video; default model.prompt_learner()",
    "token_ids": "token_ids(model) -> [n_cls, L] (any numeric dtype); default model.prompt_learner.tokenized_prompts",
    "encode_text": "encode_text(model, prompts [n, L, width], ids [n, L]) -> [n, E]; default model.text_encoder(prompts, ids)",
    "frames": "the frame count the model takes, when fixed; default the data's, else found by probing",
    "trainable_clip": "patterns (fnmatch) of the model's parameter names that are CLIP's and train by design",
    "save_state": "save_state(model) -> dict, the checkpoint; default trainable_state_dict() or the trainable tensors",
    "load_state": "load_state(model, state), the run's loader; default load_trainable_state_dict(strict) or a strict "
                  "load of the trainable tensors",
    "train_step": "train_step(model, features, labels, mask | None, optimizer) -> loss, one training step; default loss, "
                  "backward, optimizer.step()",
    "make_scheduler": "make_scheduler(optimizer) -> scheduler, stepped once per training step; default none (the "
                      "optimiser's learning rate held)",
    "distributed_step": "distributed_step(model, features, labels, mask | None, optimizer, rank, world_size) -> loss: "
                        "this process's share of a global batch, one step as the run takes it under torchrun; no default",
    "shots": "K of a K-shot training split; default none (the count per class is shown, not judged)",
    "novel_classnames": "the classes held out for base-to-novel; default none",
}
#: Frame counts tried, in order, when neither the target nor its data says how many frames the model takes.
FRAME_CANDIDATES = (8, 16, 4, 32, 2)
#: Videos in the probe batch of the preflight.
PROBE = 2


def takes_mask(model: nn.Module) -> bool:
    """Whether ``model(features, mask)`` is accepted: a second parameter (or ``*args``) in its forward."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def logits(target: AuditTarget, model: nn.Module, features: torch.Tensor, mask: torch.Tensor | None = None):
    """The model's logits ``[B, n_cls]`` for a batch, as the target says to get them."""
    if target.logits is not None:
        return target.logits(model, features, mask)
    return model(features, mask) if mask is not None and takes_mask(model) else model(features)


def loss(target: AuditTarget, model: nn.Module, features, labels, mask=None) -> torch.Tensor:
    """The training loss of a batch (a scalar), as the target says to compute it."""
    if target.loss is not None:
        return target.loss(model, features, labels, mask)
    return F.cross_entropy(logits(target, model, features, mask).float(), labels.long())


def train_step(target: AuditTarget, model: nn.Module, features, labels, mask, optimizer) -> torch.Tensor:
    """One training step of the batch (the target's ``train_step``, else its loss, backward, the optimiser's
    step); returns the loss before the step."""
    if target.train_step is not None:
        out = target.train_step(model, features, labels, mask, optimizer)
        return out if isinstance(out, torch.Tensor) else torch.tensor(float("nan") if out is None else float(out))
    optimizer.zero_grad(set_to_none=True)
    value = loss(target, model, features, labels, mask)
    value.backward()
    optimizer.step()
    return value.detach()


def scheduler(target: AuditTarget, optimizer):
    """The run's schedule on ``optimizer`` (the target's ``make_scheduler``), or None."""
    return None if target.make_scheduler is None else target.make_scheduler(optimizer)


def prompts(target: AuditTarget, model: nn.Module, videos: torch.Tensor | None = None) -> torch.Tensor:
    """The prompt embeddings the text encoder gets: ``[n_cls, L, width]`` or ``[B, n_cls, L, width]``."""
    if target.prompts is not None:
        return target.prompts(model, videos)
    return model.prompt_learner()


def token_ids(target: AuditTarget, model: nn.Module) -> torch.Tensor:
    if target.token_ids is not None:
        return target.token_ids(model)
    return model.prompt_learner.tokenized_prompts


def encode_text(target: AuditTarget, model: nn.Module, prompt_embeddings, ids) -> torch.Tensor:
    if target.encode_text is not None:
        return target.encode_text(model, prompt_embeddings, ids)
    return model.text_encoder(prompt_embeddings, ids)


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(describe(v) for v in value[:3])})"
    return type(value).__name__


# --- the preflight ---------------------------------------------------------------------------


def preflight(target: AuditTarget, needs) -> None:
    """Resolve each need once per run; raise :class:`Skip` naming what to declare for the first one unmet.

    An exception the model (or a declared callable) raises on the probe propagates: that is the
    model's own failure, which the runner reports as a FAIL naming it.
    """
    for need in needs:
        reason = unmet(target, need)
        if reason:
            raise Skip(reason)


def _forward(target: AuditTarget) -> str | None:
    from .inputs import probe_batch
    from .models import computes_in, run_model

    x, _, mask = probe_batch(target, PROBE)
    outs = []
    target.cache["forward_dtype"] = computes_in(lambda: outs.append(run_model(target, x, mask)))
    out = outs[0]
    n = len(target.classnames)
    if isinstance(out, torch.Tensor) and list(out.shape) == [PROBE, n]:
        return None
    how = "logits(model, features, mask)" if target.logits is not None else "model(features)"
    hint = "lambda model, features, mask: ..."
    if isinstance(out, (tuple, list)):
        at = [i for i, v in enumerate(out) if isinstance(v, torch.Tensor) and list(v.shape) == [PROBE, n]]
        if at:
            hint = f"lambda model, features, mask: model(features)[{at[0]}]"
    return (f"{how} returned {describe(out)} for {PROBE} videos, not logits [{PROBE}, {n}]: declare "
            f"AuditTarget(logits={hint})")


def _loss(target: AuditTarget) -> str | None:
    if target.loss is not None:
        return None  # a declared loss is called as is; what it raises is the model's
    reason = unmet(target, "forward")
    if reason:
        return reason
    from .inputs import probe_batch
    from .models import preserved_modes, preserved_buffers

    x, y, mask = probe_batch(target, PROBE)
    model = target.model
    try:
        with preserved_modes(model), preserved_buffers(model), torch.no_grad():
            out = logits(target, model.train(), x, mask)
    except Exception as e:  # noqa: BLE001: the eval forward ran; a training forward that refuses is a gap
        return (f"the forward gives logits in eval mode but raises in training mode ({type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0][:120]}): if the training forward takes the labels or returns "
                f"the loss, declare AuditTarget(loss=lambda model, features, labels, mask: ...)")
    if isinstance(out, torch.Tensor) and list(out.shape) == [PROBE, len(target.classnames)]:
        return None
    return (f"in training mode the forward returns {describe(out)}, not logits: declare AuditTarget(loss=lambda "
            f"model, features, labels, mask: ...) (the training objective, a scalar)")


def _text(target: AuditTarget) -> str | None:
    model, n = target.model, len(target.classnames)
    declare = "declare AuditTarget(prompts=..., token_ids=..., encode_text=...) to audit its text path"
    if target.prompts is None:
        pl = getattr(model, "prompt_learner", None)
        if pl is None:
            return f"{type(model).__name__} has no prompt_learner (no learned prompts in the CoOp layout): {declare}"
        try:
            params = inspect.signature(pl.forward).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            return (f"prompt_learner() takes {', '.join(required)} (prompts conditioned on each video): declare "
                    f"AuditTarget(prompts=lambda model, videos: ...) giving [B, n_cls, L, width] for the videos")
    if target.token_ids is None and not isinstance(getattr(getattr(model, "prompt_learner", None),
                                                           "tokenized_prompts", None), torch.Tensor):
        return "the prompt learner has no tokenized_prompts: declare AuditTarget(token_ids=lambda model: ...) [n_cls, L]"
    if target.encode_text is None and not isinstance(getattr(model, "text_encoder", None), nn.Module):
        return f"{type(model).__name__} has no text_encoder: declare AuditTarget(encode_text=lambda model, prompts, ids: ...)"
    from .text import compute_view

    p, ids = compute_view(target)
    if p.dim() != 3 or p.shape[0] != n or ids.shape != p.shape[:2]:
        return (f"prompts {list(p.shape)} and ids {list(ids.shape)} are not [n_cls={n}, L, width] and [n_cls, L]: "
                f"declare prompts= and token_ids= giving them")
    with torch.no_grad():
        out = encode_text(target, model, p[:1], ids[:1])
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        return (f"the text encoder returned {describe(out)} for one class's prompt, not [1, E]: declare "
                f"AuditTarget(encode_text=lambda model, prompts, ids: ...)")
    return None


def _clip(target: AuditTarget) -> str | None:
    if target.clip_model is None:
        return "the target gives no CLIP model: return AuditTarget(model, classnames, clip_model=..., tokenizer=...)"
    from .reference import clean_clip

    if "clean_clip" not in target.cache:
        try:
            target.cache["clean_clip"] = clean_clip(target.clip_model)
        except Skip as e:
            return str(e)
    return None


def _tokenizer(target: AuditTarget) -> str | None:
    return None if target.tokenizer is not None else \
        "the target gives no tokenizer: return AuditTarget(model, classnames, clip_model=..., tokenizer=...)"


def _data(target: AuditTarget) -> str | None:
    return None if target.datasets() else "the target has no dataset"


def _train(target: AuditTarget) -> str | None:
    if target.train_step is not None:
        return None
    return unmet(target, "loss")


def _distributed(target: AuditTarget) -> str | None:
    if target.distributed_step is not None:
        return None
    return ("the target declares no distributed step: declare AuditTarget(distributed_step=lambda model, features, "
            "labels, mask, optimizer, rank, world_size: ...), one step of this process's share of a global batch as "
            "the run takes it under torchrun (its DDP wrapper, gathers and loss scaling)")


def unmet(target: AuditTarget, need: str) -> str | None:
    """Why the target does not meet ``need`` (what to declare), or None; resolved once per run."""
    key = f"need:{need}"
    if key not in target.cache:
        target.cache[key] = NEEDS[need](target)
    return target.cache[key]


NEEDS = {"forward": _forward, "loss": _loss, "text": _text, "clip": _clip, "tokenizer": _tokenizer, "data": _data,
         "train": _train, "distributed": _distributed}
