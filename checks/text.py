"""The audited model's text side, read through the contract (:mod:`checks.contract`): its prompts and
their ids (for prompts conditioned on each video, those of the probe video), its text encoder, the
class features of that call, the references of the suite's own clean CLIP, and how spread a set of
class features is.

What the model's own forward computes for the text is in :mod:`checks.models`: running the
forward needs an input batch (:mod:`checks.inputs`), whose width may come from these features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.model import class_words

from . import contract, reference
from .core import AuditTarget, Skip
from .locations import locate

#: Classes sampled by the per-class probes (alone vs together, template parity, causal mask).
PROBE_CLASSES = 8
#: CLIP's hand-written prompt for a class, the zero-shot reference of eot-collapse (its spread) and of
#: learning-signal (its loss): like the learned prompts, it puts a shared prefix before every class name.
NATURAL_PROMPT = "a video of a person {}."


def view(target: AuditTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts ``[n_cls, L, width]`` and ids ``[n_cls, L]`` the text encoder gets, computed once
    per run: ``contract.prompts`` for the probe video (the first video of every probe batch) when the
    prompts are conditioned on each video, ``[B, n_cls, L, width]``.

    Raises:
        Skip: the target does not give a text path (what to declare is in the message).
    """
    contract.preflight(target, ("text",))
    return compute_view(target)


def compute_view(target: AuditTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`view` without the preflight (the preflight itself reads it). Every prompt set is kept
    (:func:`prompt_sets`); the view is the first (template 0 of an ensemble).

    Raises:
        Skip: prompts and ids that are not one (or ``prompts_per_class``) prompt(s) per class.
    """
    if "text_view" not in target.cache:
        from .inputs import probe_videos

        model = target.model
        with torch.no_grad():
            prompts = contract.prompts(target, model, probe_videos(target, 1))
            ids = contract.token_ids(target, model)
        sets, id_sets, conditioned = split_sets(target, prompts.detach(), ids.detach())
        target.cache["conditioned"] = conditioned
        target.cache["text_sets"] = sets, id_sets
        target.cache["text_view"] = sets[0], id_sets[0]
    return target.cache["text_view"]


def split_sets(target: AuditTarget, prompts: torch.Tensor, ids: torch.Tensor):
    """``(prompts [K, n_cls, L, width], ids [K, n_cls, L], conditioned)`` from what the target gives: ids
    ``[n_cls, L]``, ``[K, n_cls, L]`` or template-major ``[K * n_cls, L]``; prompts the same with a width, or
    with a leading batch of videos (conditioned on each: the first video's are kept)."""
    n, k = len(target.classnames), target.prompts_per_class
    shape = f"prompts {list(prompts.shape)} and ids {list(ids.shape)}"
    if ids.dim() == 2 and ids.shape[0] == k * n:
        ids = ids.reshape(k, n, ids.shape[-1])
    if ids.dim() != 3 or tuple(ids.shape[:2]) != (k, n):
        many = ids.shape[0] // n if ids.dim() == 2 and ids.shape[0] % n == 0 and ids.shape[0] > n else None
        hint = (f"declare AuditTarget(prompts_per_class={many}) for {many} prompts per class (ids [{many}, n_cls, L] "
                f"or template-major [{many} x n_cls, L])" if many and k == 1 else
                f"declare prompts= and token_ids= giving [n_cls={n}, L, width] and [n_cls, L]"
                + (f", [{k}, n_cls, ...] for {k} prompts per class" if k > 1 else ""))
        raise Skip(f"{shape} are not {'one prompt' if k == 1 else f'{k} prompts'} per class: {hint}")
    L = ids.shape[-1]
    lead = tuple(prompts.shape[:-2]) if prompts.dim() >= 3 and prompts.shape[-2] == L else None
    own = {(k * n,), (k, n)} if k > 1 else {(n,)}
    if lead in own:
        conditioned = False
    elif lead is not None and len(lead) >= 2 and lead[1:] in own:
        conditioned, prompts = True, prompts[0]  # the first video's: the first video of every probe batch
    else:
        raise Skip(f"{shape} do not fit {k} prompt(s) per class: declare prompts= giving [n_cls={n}, L, width] "
                   f"([B, n_cls, L, width] conditioned on each video)" + (f", [{k}, n_cls, L, width] for {k} prompts "
                                                                        f"per class" if k > 1 else ""))
    return prompts.reshape(k, n, L, prompts.shape[-1]), ids, conditioned


def prompt_sets(target: AuditTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """Every prompt set ``[K, n_cls, L, width]`` and its ids ``[K, n_cls, L]`` (K = 1 without an ensemble)."""
    view(target)
    return target.cache["text_sets"]


def prompts_and_tokens(target: AuditTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's prompt embeddings ``[n_cls, L, width]`` and token ids ``[n_cls, L]`` (see :func:`view`)."""
    return view(target)


def view_note(target: AuditTarget) -> str:
    """An evidence line saying which prompts the text audits read."""
    view(target)
    k = target.prompts_per_class
    ensemble = (f"; {k} prompts per class (combined by {contract.combine(target)}): the text audits read the first "
                f"set, prompt-tokenization every set" if k > 1 else "")
    none = ("; no learned context: the prompts are the ids' token embeddings in the clean CLIP"
            if target.prompts is None and getattr(target.model, "prompt_learner", None) is None else "")
    if target.cache.get("conditioned"):
        return ("the prompts are conditioned on each video ([B, n_cls, L, width]): the text audits read those of "
                "probe video 0, the first video of every batch the forward probes run" + ensemble + none)
    return "the prompts do not depend on the videos: the text audits read the one set [n_cls, L, width]" + ensemble + none


def encode(target: AuditTarget, prompts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The target's text encoder on given prompts, fp32 ``[n, E]``, no grad."""
    with torch.no_grad():
        return contract.encode_text(target, target.model, prompts, tokens).float()


def text_location(target: AuditTarget, pattern: str | None = None) -> str | None:
    """Where the text encoder is written: its module's forward, or the declared callable."""
    te = getattr(target.model, "text_encoder", None) if target.encode_text is None else target.encode_text
    if isinstance(te, nn.Module):
        te = type(te).forward
    if te is None:
        return locate(type(target.model))
    return (locate(te, pattern) if pattern else None) or locate(te)


def clean_clip(target: AuditTarget) -> nn.Module:
    """The suite's own clean CLIP (:func:`checks.reference.clean_clip`), built once per run.

    Raises:
        Skip: no CLIP model given, or none that a clean tower can be rebuilt from.
    """
    contract.preflight(target, ("clip",))
    return target.cache["clean_clip"]


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


def plain_text_features(target: AuditTarget) -> torch.Tensor:
    """The text encoder on the text view (:func:`view`), ``[n_cls, E]`` (unnormalised), computed once per run.

    When the model runs the CLIP model's own text transformer, its output is kept as well
    (``target.cache["hidden"]``), so other poolings of the same states cost no second pass.
    """
    if "text_plain" not in target.cache:
        prompts, tokens = view(target)
        captured, handle = [], None
        if target.clip_model is not None:
            try:
                transformer = reference.tower(target.clip_model).transformer
                handle = transformer.register_forward_hook(lambda m, a, out: captured.append(out.detach()))
            except Skip:
                pass
        try:
            target.cache["text_plain"] = encode(target, prompts, tokens)
        finally:
            if handle is not None:
                handle.remove()
        hidden = captured[-1] if len(captured) == 1 else None
        if hidden is not None and hidden.shape[:2] == tokens.shape:
            target.cache["hidden"] = hidden  # [n_cls, L, width], batch-first
    return target.cache["text_plain"]


def natural_prompt_features(target: AuditTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids ``[n_cls, L]`` of :data:`NATURAL_PROMPT` for each class and the clean CLIP's ``encode_text`` of
    them ``[n_cls, E]`` fp32 (:func:`~checks.reference.fast_encode_text`), computed once per run.

    Raises:
        Skip: no clean CLIP to encode them with.
    """
    if "natural_text" not in target.cache:
        clip = clean_clip(target)
        ids = target.tokenizer([NATURAL_PROMPT.format(w) for w in class_word_list(target)])
        target.cache["natural_text"] = ids, reference.fast_encode_text(clip, ids)
    return target.cache["natural_text"]


def spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)`` (always the first, and the last when ``k > 1``)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def probe_classes(n: int, k: int = PROBE_CLASSES) -> list[int]:
    """Up to ``k`` class indices spread evenly over ``n`` (always the first and the last)."""
    return spread(n, k)


def encode_text_references(target: AuditTarget, ids: torch.Tensor, clip: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """``encode_text`` of ``ids`` (padded to the context length) ``[n, E]`` fp32, and the same pass's
    transformer states mean-pooled over 0..EOT (the seed's pooling), from the suite's clean CLIP
    (``clip``: another CLIP-like module, e.g. its fp32 copy)."""
    return reference.encode_text(clean_clip(target) if clip is None else clip, ids.long(), mean=True)


def probe_references(target: AuditTarget) -> dict[str, torch.Tensor]:
    """:func:`encode_text_references` of the probe classes' own ids (:func:`view`), computed once per run:
    the tolerance's half-precision floor and causal-mask's tower without a mask both read them."""
    if "probe_references" not in target.cache:
        _, tokens = view(target)
        target.cache["probe_references"] = encode_text_references(target, tokens[probe_classes(tokens.shape[0])])
    return target.cache["probe_references"]


def stats(features: torch.Tensor) -> dict[str, float]:
    """Spread of L2-normalised class features ``[n, E]``.

    Mean and max off-diagonal cosine, each class's margin (1 - cosine to its nearest
    other class: min and mean), and the effective rank (exp of the entropy of the
    normalised singular values; n when all directions are used equally, 1 when collapsed).
    """
    f = F.normalize(features.float().cpu(), dim=-1)
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
    f = F.normalize(features.float().cpu(), dim=-1)
    return f @ f.t()
