"""The audited model's text side, read through the CoOp layout: its prompt learner and text
encoder, the prompts and token ids, the plain CoOp call's class features, CLIP's own
references, and how spread a set of class features is.

What the model's own forward computes for the text is in :mod:`checks.models`: running the
forward needs an input batch (:mod:`checks.inputs`), whose width may come from these features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.model import class_words

from . import reference
from .core import AuditTarget, Skip

#: Classes sampled by the per-class probes (alone vs together, template parity, causal mask).
PROBE_CLASSES = 8


def prompt_learner(target: AuditTarget) -> nn.Module:
    pl = getattr(target.model, "prompt_learner", None)
    if pl is None:
        raise Skip(f"{type(target.model).__name__} has no prompt_learner (not the CoOp layout)")
    return pl


def text_encoder(target: AuditTarget) -> nn.Module:
    te = getattr(target.model, "text_encoder", None)
    if te is None:
        raise Skip(f"{type(target.model).__name__} has no text_encoder (not the CoOp layout)")
    return te


def need_clip(target: AuditTarget, tokenizer: bool = False) -> nn.Module:
    if target.clip_model is None or (tokenizer and target.tokenizer is None):
        raise Skip("the target gives no CLIP model" + (" and tokenizer" if tokenizer else "")
                   + ": return AuditTarget(model, classnames, clip_model=..., tokenizer=...) to run it")
    return target.clip_model


def eot_token_id(target: AuditTarget) -> int | None:
    """The EOT id: the tokenizer's, the prompt learner's, or None (argmax convention)."""
    for owner in (target.tokenizer, getattr(target.model, "prompt_learner", None)):
        value = getattr(owner, "eot_token_id", None)
        if value is not None:
            return int(value)
    return None


def eot_index(target: AuditTarget, tokens: torch.Tensor) -> torch.Tensor:
    return reference.eot_positions(tokens, eot_token_id(target))


def class_word_list(target: AuditTarget) -> list[str]:
    """The words each class contributes to its prompt (the learner's own when it says)."""
    words = getattr(getattr(target.model, "prompt_learner", None), "class_words", None)
    return list(words) if words else [class_words(c) for c in target.classnames]


def prompts_and_tokens(target: AuditTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's prompt embeddings ``[n_cls, L, width]`` and token ids ``[n_cls, L]``."""
    pl = prompt_learner(target)
    with torch.no_grad():
        prompts = pl()
    return prompts.detach(), pl.tokenized_prompts


def encode(target: AuditTarget, prompts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The target's text encoder on given prompts, fp32 ``[n, E]``, no grad."""
    with torch.no_grad():
        return text_encoder(target)(prompts, tokens).float()


def plain_text_features(target: AuditTarget) -> torch.Tensor:
    """``text_encoder(prompt_learner(), tokenized_prompts)``, the CoOp call, ``[n_cls, E]``
    (unnormalised), computed once per run.

    When the CLIP model is known, its text transformer's output is kept as well
    (``target.cache["hidden"]``), so other poolings of the same states cost no second pass.
    """
    if "text_plain" not in target.cache:
        prompts, tokens = prompts_and_tokens(target)
        captured = []
        handle = None
        if target.clip_model is not None:
            handle = reference.tower(target.clip_model).transformer.register_forward_hook(
                lambda m, a, out: captured.append(out.detach()))
        try:
            target.cache["text_plain"] = encode(target, prompts, tokens)
        finally:
            if handle is not None:
                handle.remove()
        hidden = captured[-1] if len(captured) == 1 else None
        if hidden is not None and hidden.shape[:2] == tokens.shape:
            target.cache["hidden"] = hidden  # [n_cls, L, width], batch-first
    return target.cache["text_plain"]


def probe_classes(n: int, k: int = PROBE_CLASSES) -> list[int]:
    """Up to ``k`` class indices spread evenly over ``n`` (always the first and the last)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def encode_text_references(target: AuditTarget, ids: torch.Tensor, clip: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """``clip.encode_text`` of ``ids`` (padded to the context length) ``[n, E]`` fp32, and the
    same pass's transformer states mean-pooled over 0..EOT (the seed's pooling), both from
    open_clip alone (:mod:`checks.reference`).

    ``clip``: the target's CLIP model when None.
    """
    return reference.encode_text(target.clip_model if clip is None else clip, ids, mean=True)


def stats(features: torch.Tensor) -> dict[str, float]:
    """Spread of L2-normalised class features ``[n, E]``.

    Mean and max off-diagonal cosine, each class's margin (1 - cosine to its nearest
    other class: min and mean), and the effective rank (exp of the entropy of the
    normalised singular values; n when all directions are used equally, 1 when collapsed).
    """
    f = F.normalize(features.float(), dim=-1)
    n = f.shape[0]
    cos = f @ f.t()  # [n, n]
    off = cos.masked_fill(torch.eye(n, dtype=torch.bool), float("nan"))
    nearest = torch.nan_to_num(off, nan=-2.0).amax(dim=1)  # [n]
    s = torch.linalg.svdvals(f.double())
    p = s / s.sum()
    p = p[p > 0]
    return {
        "mean_cos": float(off.nanmean()),
        "max_cos": float(nearest.max()),
        "min_margin": float((1 - nearest).min()),
        "mean_margin": float((1 - nearest).mean()),
        "effective_rank": float(torch.exp(-(p * p.log()).sum())),
    }


def cosine_matrix(features: torch.Tensor) -> torch.Tensor:
    f = F.normalize(features.float(), dim=-1)
    return f @ f.t()
