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
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .core import AuditTarget, Skip

#: What ``combine`` may say: how the K prompts of a class (a template ensemble) make one score.
COMBINES = ("features", "probabilities", "max")
#: What the evaluation forward may return (``output``).
OUTPUTS = ("logits", "probabilities")
#: The temporal operations ``temporal_kind`` may name, and what each does to a signal in one frame.
TEMPORAL_KINDS = {
    "pointwise": "each frame on its own: a signal stays in its frame, frame order changes nothing",
    "shift": "channels read from the next or previous frame: a signal reaches its neighbours only",
    "conv:K": "a convolution of width K over the frames: a signal reaches K // 2 frames either side",
    "attention": "self-attention over the frames with their positions: reaches every frame, order matters",
    "attention-unordered": "self-attention without positions: reaches every frame, permuting the frames permutes "
                           "the output",
}
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
    "train_step": "train_step(model, features, labels, mask | None, optimizer) -> loss, one training step of the "
                  "user's own loop, with its precision handling; default loss, backward, optimizer.step()",
    "make_scheduler": "make_scheduler(optimizer) -> scheduler, stepped once per training step; default none (the "
                      "optimiser's learning rate held)",
    "distributed_step": "distributed_step(model, features, labels, mask | None, optimizer, rank, world_size) -> loss: "
                        "this process's share of a global batch, one step as the run takes it under torchrun; no default",
    "shots": "K of a K-shot training split; default none (the count per class is shown, not judged)",
    "novel_classnames": "the classes held out for base-to-novel; default none",
    # past one prompt per class
    "prompts_per_class": "K prompts per class (a template ensemble): prompts [K, n_cls, L, width] ([B, K, n_cls, L, "
                         "width] per video), token_ids [K, n_cls, L]; default 1",
    "combine": "how the K prompts' scores become one: features (the mean of the normalised text features), "
               "probabilities (each prompt's softmax over the classes, averaged), max (of the logits); default features",
    "output": "what the evaluation forward returns, logits or probabilities; default detected (rows of non-negative "
              "values summing to 1 are probabilities) and said",
    "encode_video": "encode_video(model, features, mask) -> [B, E], the video feature the scores use; default "
                    "model.encode_video(features[, mask])",
    "text_features": "text_features(model, features, mask) -> [n_cls, E], [B, n_cls, E] (text conditioned on each "
                     "video), [K, n_cls, E] or [B, K, n_cls, E]; default the text encoder on the prompts",
    "for_classes": "for_classes(model, classnames) -> the model scoring these classes (changed in place or new); no "
                   "default: the CoOp layout fixes its classes when it is built",
    "temporal": "temporal(model, frames [B, T, D]) -> [B, T, D], the temporal head before pooling; default "
                "model.temporal(frames)",
    "temporal_kind": "the temporal head's operation: " + ", ".join(f"{k} ({v})" for k, v in TEMPORAL_KINDS.items()),
    "eval_temperature": "the fixed temperature evaluation applies by design, where training applies exp(logit_scale)",
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
    """The training loss of a batch (a scalar), as the target says to compute it: by default the
    cross-entropy of the logits, or the NLL of the probabilities when the target declares its output is
    probabilities (undeclared, a training loop would apply cross-entropy's softmax to them again)."""
    if target.loss is not None:
        return target.loss(model, features, labels, mask)
    out = logits(target, model, features, mask).float()
    if target.output == "probabilities":
        return F.nll_loss(out.clamp_min(1e-12).log(), labels.long())
    return F.cross_entropy(out, labels.long())


def looks_like_probabilities(out: torch.Tensor) -> bool:
    """Rows of non-negative values summing to 1 (within half-precision rounding)."""
    out = out.detach().float()
    return out.dim() == 2 and out.shape[1] > 1 and bool((out >= 0).all()) and \
        bool(((out.sum(dim=1) - 1).abs() <= 1e-2).all())


def output_kind(target: AuditTarget) -> tuple[str, str]:
    """``("logits" | "probabilities", how it is known)``: declared, or read off the probe forward."""
    if target.output is not None:
        return target.output, f"declared (AuditTarget(output={target.output!r}))"
    unmet(target, "forward")
    out = target.cache.get("probe_output")
    if isinstance(out, torch.Tensor) and looks_like_probabilities(out):
        return "probabilities", ("detected: the forward's rows are non-negative and sum to 1 (declare "
                                 "AuditTarget(output='probabilities') to say so)")
    return "logits", "the forward's rows are not probabilities: logits"


def combine(target: AuditTarget) -> str:
    """How the K prompts of a class combine (``features`` when one prompt per class, or undeclared)."""
    return target.combine or "features"


def check_declarations(target: AuditTarget) -> None:
    """Refuse declarations that name no known option.

    Raises:
        VideoCoopError: naming the value and the valid options.
    """
    from videocoop import VideoCoopError

    k = target.prompts_per_class
    if not isinstance(k, int) or k < 1:
        raise VideoCoopError(f"AuditTarget(prompts_per_class={k!r}): give the number of prompts per class, an int >= 1")
    for name, value, options in (("combine", target.combine, COMBINES), ("output", target.output, OUTPUTS)):
        if value is not None and value not in options:
            raise VideoCoopError(f"AuditTarget({name}={value!r}): choose one of {', '.join(options)}")
    if target.temporal_kind is not None and temporal_reach(target.temporal_kind) is None:
        raise VideoCoopError(f"AuditTarget(temporal_kind={target.temporal_kind!r}): choose one of "
                             f"{', '.join(TEMPORAL_KINDS)} (conv:K with K an odd width, e.g. conv:3)")


def temporal_reach(kind: str) -> int | None:
    """How many frames away a signal may land under ``kind``: 0, 1, K // 2; -1 for attention (any); None: unknown."""
    if kind in ("pointwise", "shift", "attention", "attention-unordered"):
        return {"pointwise": 0, "shift": 1}.get(kind, -1)
    width = kind.removeprefix("conv:")
    if kind.startswith("conv:") and width.isdigit() and int(width) % 2 == 1:
        return int(width) // 2
    return None


def encode_video(target: AuditTarget, model: nn.Module, features, mask=None) -> torch.Tensor:
    """The video feature ``[B, E]`` the scores use.

    Raises:
        Skip: no ``encode_video`` anywhere, or one that does not return ``[B, E]`` (the reason names what to declare).
    """
    if target.encode_video is not None:
        return target.encode_video(model, features, mask)
    fn = getattr(model, "encode_video", None)
    if not callable(fn):
        raise Skip(f"{type(model).__name__} has no encode_video: declare AuditTarget(encode_video=lambda model, "
                   f"features, mask: ...) giving the video feature [B, E] its scores use")
    out = fn(features, mask) if mask is not None else fn(features)
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == features.shape[0]:
        return out
    at = [i for i, v in enumerate(out) if isinstance(v, torch.Tensor) and v.dim() == 2] \
        if isinstance(out, (tuple, list)) else []
    try:
        two = len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        two = False
    pick = f"model.encode_video(features{', mask' if two else ''})[{at[0]}]" if at else "..."
    raise Skip(f"model.encode_video returned a {type(out).__name__}, not the video feature [B, E]: declare "
               f"AuditTarget(encode_video=lambda model, features, mask: {pick})")


def for_classes(target: AuditTarget, model: nn.Module, classnames) -> nn.Module:
    """The model scoring ``classnames`` instead of its own (the declared ``for_classes``; for a model built per
    class list, :func:`checks.classes.rebuilt_for_classes` makes one)."""
    out = target.for_classes(model, list(classnames))
    return model if out is None else out


def temporal(target: AuditTarget, model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """The temporal head on ``frames`` ``[B, T, D]`` -> ``[B, T, D]``, as declared (default ``model.temporal``)."""
    if target.temporal is not None:
        return target.temporal(model, frames)
    return model.temporal(frames)


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
    """The prompt embeddings the text encoder gets: ``[n_cls, L, width]`` or ``[B, n_cls, L, width]``
    (``[K, n_cls, ...]`` or ``[B, K, n_cls, ...]`` for K prompts per class). A model with no prompt learner
    whose target declares ``token_ids`` has prompts with no learned context: the ids' token embeddings in
    the suite's clean CLIP (the ``clip`` need)."""
    if target.prompts is not None:
        return target.prompts(model, videos)
    if getattr(model, "prompt_learner", None) is None and target.token_ids is not None:
        from .reference import tower

        embedding = tower(target.cache["clean_clip"]).token_embedding
        ids = token_ids(target, model)
        dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), embedding.weight.dtype)
        with torch.no_grad():
            return embedding(ids.long().to(embedding.weight.device)).to(ids.device, dtype)
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
        target.cache["probe_output"] = out.detach()  # the eval output of probe videos 0 and 1
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
        target.cache["probe_train_output"] = out.detach()  # the training-mode output of the preflight's probe videos
        return None
    return (f"in training mode the forward returns {describe(out)}, not logits: declare AuditTarget(loss=lambda "
            f"model, features, labels, mask: ...) (the training objective, a scalar)")


def _text(target: AuditTarget) -> str | None:
    model = target.model
    declare = ("declare AuditTarget(prompts=..., token_ids=..., encode_text=...) to audit its text path, or for "
               "prompts with no learned context (bare class names, hand-written templates) token_ids=... and "
               "encode_text=... (the suite embeds the ids with CLIP's token embedding)")
    if target.prompts is None:
        pl = getattr(model, "prompt_learner", None)
        if pl is None and target.token_ids is not None:  # no learned context: the prompts are the ids' embeddings
            gap = unmet(target, "clip")
            if gap:
                return f"prompts with no learned context are embedded with the clean CLIP's token embedding: {gap}"
        elif pl is None:
            return f"{type(model).__name__} has no prompt_learner (no learned prompts in the CoOp layout): {declare}"
        try:
            params = inspect.signature(pl.forward).parameters.values() if pl is not None else []
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

    try:
        p, ids = compute_view(target)
    except Skip as e:  # shapes that are not one (or K) prompt(s) per class
        return str(e)
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


def _data(target: AuditTarget) -> str | None:
    return None if target.datasets() else "the target has no dataset"


def _train(target: AuditTarget) -> str | None:
    if target.train_step is not None:
        return None
    return unmet(target, "loss")


def _declared(field: str, missing: str) -> Callable[[AuditTarget], str | None]:
    """A need met by declaring ``AuditTarget(field=...)``; ``missing`` says what to declare."""
    return lambda target: None if getattr(target, field) is not None else missing


def _temporal(target: AuditTarget) -> str | None:
    kinds = ", ".join(TEMPORAL_KINDS)
    module = getattr(target.model, "temporal", None)
    if target.temporal is None and not isinstance(module, nn.Module):
        return (f"the model declares no temporal head and has no model.temporal module (a mean or max over the frames "
                f"has no temporal operation to hold): for one, declare AuditTarget(temporal=lambda model, frames: ... "
                f"[B, T, D] before pooling, temporal_kind=...), the kind one of {kinds}")
    if target.temporal_kind is None:
        return f"the temporal head's operation is not declared: declare AuditTarget(temporal_kind=...), one of {kinds}"
    from .inputs import probe_videos

    from .models import preserved_modes

    x = probe_videos(target, PROBE)
    with preserved_modes(target.model), torch.no_grad():
        out = temporal(target, target.model.eval(), x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return (f"the temporal head returned {describe(out)} for frames {list(x.shape)}: declare AuditTarget(temporal="
                f"lambda model, frames: ...) giving every frame's features [B, T, D] before pooling")
    return None


def unmet(target: AuditTarget, need: str) -> str | None:
    """Why the target does not meet ``need`` (what to declare), or None; resolved once per run."""
    key = f"need:{need}"
    if key not in target.cache:
        target.cache[key] = NEEDS[need](target)
    return target.cache[key]


NEEDS = {"forward": _forward, "loss": _loss, "text": _text, "clip": _clip,
         "tokenizer": _declared("tokenizer", "the target gives no tokenizer: return AuditTarget(model, classnames, "
                                             "clip_model=..., tokenizer=...)"),
         "data": _data, "train": _train,
         "distributed": _declared("distributed_step", "the target declares no distributed step: declare AuditTarget("
                                  "distributed_step=lambda model, features, labels, mask, optimizer, rank, world_size: "
                                  "...), one step of this process's share of a global batch as the run takes it under "
                                  "torchrun (its DDP wrapper, gathers and loss scaling)"),
         "classes": _declared("for_classes", "the target says no way to score another class list (the CoOp layout "
                              "fixes its classes when it is built): declare AuditTarget(for_classes=lambda model, "
                              "classnames: ...) returning the model scoring those classes (a rebuilt one, or the same "
                              "one given the new list)"),
         "temporal": _temporal}
