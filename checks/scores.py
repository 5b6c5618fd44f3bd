"""What a model's scores should be, from its own video and text features: ``scale x cosine`` per prompt,
combined over the prompts of a class as the target declares (:data:`checks.contract.COMBINES`), and
softmaxed when the output is probabilities. The logit-scale and temperature audits hold the forward to it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import contract
from .core import AuditTarget, Skip
from .models import preserved_modes, text_features
from .tolerances import rel_diff

#: log-scales searched when fitting the temperature that explains probabilities (exp: 0.37 to 3000).
FIT_RANGE = (-1.0, 8.0)


def features(target: AuditTarget, model, x: torch.Tensor):
    """``(video [B, E], text [B or 1, K, n_cls, E], rows, how, norms [B])``: the model's video feature
    (``encode_video``) and the class text its scores use, both L2-normalised; ``rows``: the videos the text
    belongs to (video 0 alone for prompts conditioned on each video, read through the text view). None when
    the target gives no video feature or no text (the reason, what to declare, is in ``how``)."""
    with preserved_modes(model), torch.no_grad():
        model.eval()  # as the scores were computed
        try:
            raw = contract.encode_video(target, model, x).float()  # [B, E]
        except Skip as e:
            return None, str(e)
        if target.text_features is not None:
            text = target.text_features(model, x, None).float()
            how = " (the declared text_features" + (", per video)" if text.dim() in (3, 4) and text.shape[0] == len(x)
                                                   and not (text.dim() == 3 and target.prompts_per_class > 1) else ")")
            text = _as_sets(target, text, len(x))
            rows = slice(None)
        else:
            try:
                text, rows, how = _from_view(target, model)
            except Skip as e:
                return None, str(e)
    video, norms = F.normalize(raw, dim=-1), raw.norm(dim=-1)
    return (video, F.normalize(text, dim=-1), rows, how, norms), ""


def _as_sets(target: AuditTarget, text: torch.Tensor, batch: int) -> torch.Tensor:
    """Declared text features as ``[B or 1, K, n_cls, E]``."""
    k = target.prompts_per_class
    if text.dim() == 2:
        return text[None, None]  # [n_cls, E]
    if text.dim() == 3:
        return text[None] if k > 1 and text.shape[0] == k else text[:, None]  # [K, n, E] or [B, n, E]
    return text  # [B, K, n, E]


def _from_view(target: AuditTarget, model):
    """The text features of the target's prompts: every prompt set when there are several, video 0's when
    the prompts are conditioned on each video."""
    from .text import encode, prompt_sets

    sets, ids = prompt_sets(target)
    if sets.shape[0] > 1:
        text = torch.stack([encode(target, p, i) for p, i in zip(sets, ids)])  # [K, n_cls, E]
        how = f" (each of the {sets.shape[0]} prompt sets through the text encoder)"
    else:
        text = text_features(target).float()[None]  # [1, n_cls, E]: as the forward computes it
        how = ""
    if target.cache.get("conditioned"):
        return text[None], slice(0, 1), " (video 0: the text is conditioned on each video)"
    return text[None], slice(None), how


def expected(video: torch.Tensor, text: torch.Tensor, scale: float, how: str, kind: str) -> torch.Tensor:
    """The scores ``[B, n_cls]`` of ``scale x cos`` per prompt, combined by ``how``, softmaxed when ``kind`` is
    probabilities (the ``probabilities`` combine averages each prompt's softmax)."""
    if how == "features":  # one feature per class: the prompts' normalised features averaged
        text = F.normalize(text.mean(dim=1, keepdim=True), dim=-1)
    logits = scale * torch.einsum("be,bkne->bkn", video, text.expand(video.shape[0], -1, -1, -1))  # [B, K, n]
    if how == "probabilities":
        return logits.softmax(dim=-1).mean(dim=1)
    logits = logits.max(dim=1).values if how == "max" else logits[:, 0]
    return logits.softmax(dim=-1) if kind == "probabilities" else logits


def fit_scale(out: torch.Tensor, video, text, how: str, kind: str) -> tuple[float, float]:
    """``(scale, max relative difference)``: the temperature that best explains ``out``, searched over
    :data:`FIT_RANGE` of log-scales (a grid, then a finer one around the best)."""
    def diff(log_s: float) -> float:
        return float(rel_diff(out, expected(video, text, math.exp(log_s), how, kind)).max())

    lo, hi = FIT_RANGE
    best = min((lo + i * (hi - lo) / 90 for i in range(91)), key=diff)
    step = (hi - lo) / 90
    best = min((best + (j - 20) * step / 20 for j in range(41)), key=diff)
    return math.exp(best), diff(best)
