"""References from open_clip alone: what the audits hold a model's text path to.

The CLIP the references run is the suite's own (:func:`clean_clip`): a clean open_clip text tower
of the same architecture as the target's CLIP, CLIP's weights copied in. A port may change the CLIP
model it hands over (deep prompts replace its text blocks), so a reference run through the user's
``clip_model`` could compare a model with itself. Nothing here imports videocoop. An audit that compared a model with videocoop's own
``TextEncoder`` would pass any bug the model shares with it (and a ``--target`` may well be
built on ours), so every reference is CLIP's own ``encode_text``, or CLIP's own modules,
mask and pooling function (``open_clip.transformer.text_global_pool``) run by this file.
Where a faster reference stands in for ``encode_text`` (:func:`fast_encode_text`), the audit
shows the two equal on a sample of its own inputs (:func:`fast_agrees`) and says so.
"""
from __future__ import annotations

import functools

import torch
from open_clip.transformer import LayerScale, ResidualAttentionBlock, TextTransformer, text_global_pool
from torch import nn

from .core import Skip

_TEXT_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final")


def tower(clip: nn.Module) -> nn.Module:
    """The module that owns CLIP's text path: the CLIP model itself, or ``.text`` (CustomTextCLIP).

    Raises:
        Skip: not an open_clip text transformer (a Hugging Face tower, say): nothing to compare with.
    """
    text = getattr(clip, "text", None)
    owner = text if text is not None and hasattr(text, "transformer") else clip
    missing = [a for a in _TEXT_PARTS if not hasattr(owner, a)]
    if missing:
        raise Skip(f"{type(clip).__name__} has no open_clip text transformer (missing {', '.join(missing)}): "
                   f"no reference to compare with")
    return owner


def context_length(clip: nn.Module) -> int:
    return tower(clip).positional_embedding.shape[0]


def pool_type(clip: nn.Module) -> str:
    """How CLIP pools its text: ``argmax`` of the ids (the EOT is the largest id) or ``eos`` (by id)."""
    t = tower(clip)
    return getattr(t, "text_pool_type", getattr(t, "pool_type", "argmax"))


def eos_id(clip: nn.Module) -> int | None:
    """The id CLIP pools at when it pools by id (``eos``); None when it pools at the argmax."""
    t = tower(clip)
    return getattr(t, "text_eos_id", getattr(t, "eos_id", None)) if pool_type(clip) == "eos" else None


def eot_positions(ids: torch.Tensor, eot_id: int | None = None) -> torch.Tensor:
    """The first ``eot_id`` in each row ``[n]``; the argmax of the ids when None (CLIP's convention)."""
    if eot_id is None:
        return ids.argmax(dim=-1)
    return (ids == eot_id).int().argmax(dim=-1)


def clip_eot(clip: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Where CLIP itself pools each row of ``ids`` ``[n]``."""
    return eot_positions(ids, eos_id(clip))


def causal(clip: nn.Module) -> bool:
    """Whether CLIP's text tower runs under a causal mask (and nothing else: no padding mask, no CLS token)."""
    t = tower(clip)
    return (getattr(t, "attn_mask", None) is not None and not getattr(t, "use_pad_mask", False)
            and getattr(t, "cls_emb", None) is None)


def full_length(clip: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``ids`` padded with 0 (or cut) to CLIP's context length, on CLIP's device ``[n, context]``."""
    t = tower(clip)
    length = context_length(clip)
    padded = torch.zeros(len(ids), length, dtype=ids.dtype)
    padded[:, : min(ids.shape[1], length)] = ids[:, :length].cpu()
    return padded.to(t.token_embedding.weight.device)


def project(clip: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLIP's text projection of pooled states ``[n, width]`` -> ``[n, E]``."""
    proj = tower(clip).text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def _on(clip: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of CLIP's text tower (a model on CUDA meets a reference on the CPU)."""
    return x.to(tower(clip).positional_embedding.device)


def eot_pool(clip: nn.Module, states: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """CLIP's pooling of transformer states ``[n, L, width]`` at ``eot`` ``[n]``: ln_final, the row, projection."""
    states = _on(clip, states)
    rows = torch.arange(states.shape[0], device=states.device)
    return project(clip, tower(clip).ln_final(states)[rows, eot.to(states.device)]).float()


def mean_pool(clip: nn.Module, states: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """The seed's pooling with CLIP's modules: ln_final, the mean over positions 0..EOT, projection ``[n, E]``."""
    x = tower(clip).ln_final(_on(clip, states))  # [n, L, width]
    keep = torch.arange(x.shape[1], device=x.device)[None, :] <= eot.to(x.device)[:, None]  # [n, L]
    mean = (x * keep.unsqueeze(-1).to(x.dtype)).sum(1) / keep.sum(1, keepdim=True).to(x.dtype)
    return project(clip, mean).float()


def encode_text(clip: nn.Module, ids: torch.Tensor, mean: bool = False) -> dict[str, torch.Tensor]:
    """``clip.encode_text`` of ``ids`` padded to the full context length ``[n, E]`` fp32 (key ``eot``);
    with ``mean`` also the same pass's transformer states mean-pooled over 0..EOT (key ``mean``)."""
    t = tower(clip)
    padded = full_length(clip, ids)
    captured = []
    handle = t.transformer.register_forward_hook(lambda m, a, out: captured.append(out)) if mean else None
    try:
        with torch.no_grad():
            out = {"eot": clip.encode_text(padded).float()}
            if mean:
                out["mean"] = mean_pool(clip, captured[-1], clip_eot(clip, padded))
    finally:
        if handle is not None:
            handle.remove()
    return out


def transformer_states(clip: nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    """CLIP's transformer on prompt embeddings ``[n, L, width]`` (its positional embedding added,
    its mask sliced to ``L``): the states ``[n, L, width]``, batch-first as open_clip 3.x runs."""
    t = tower(clip)
    cast = t.transformer.get_cast_dtype() if hasattr(t.transformer, "get_cast_dtype") else embeddings.dtype
    L = embeddings.shape[1]
    x = _on(clip, embeddings).to(cast) + t.positional_embedding[:L].to(cast)
    mask = getattr(t, "attn_mask", None)
    with torch.no_grad():
        return t.transformer(x, attn_mask=None if mask is None else mask[:L, :L])


def fast_encode_text(clip: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``encode_text`` of ``ids`` run on their first ``max(EOT) + 1`` positions only, with CLIP's own
    modules, its causal mask sliced to that length and its own pooling function ``[n, E]`` fp32.

    Equal to ``encode_text`` under a causal mask (no position at or before an EOT sees anything
    after it) at a fraction of the cost for short texts; on a tower without one it is
    ``encode_text`` itself.
    """
    if not causal(clip):
        return encode_text(clip, ids)["eot"]
    t = tower(clip)
    ids = ids.to(t.token_embedding.weight.device)
    L = int(clip_eot(clip, ids).max()) + 1
    ids = ids[:, :L]
    with torch.no_grad():
        states = transformer_states(clip, t.token_embedding(ids))  # [n, L, width]
        pooled = text_global_pool(t.ln_final(states), ids, pool_type(clip), eos_token_id=eos_id(clip))
        return project(clip, pooled).float()


def fast_agrees(clip: nn.Module, ids: torch.Tensor, fast: torch.Tensor) -> float:
    """Max relative difference between :func:`fast_encode_text`'s rows ``fast`` and ``clip.encode_text``
    of the same ``ids`` at the full context length (the caller passes a sample)."""
    full = encode_text(clip, ids)["eot"]
    scale = full.abs().amax(dim=-1).clamp_min(1e-12)
    return float(((fast.float().to(full.device) - full).abs().amax(dim=-1) / scale).max())


class CleanCLIP(nn.Module):
    """The suite's own CLIP text path: open_clip's ``TextTransformer`` (its ``encode_text`` is the
    tower's forward) and CLIP's ``logit_scale``."""

    def __init__(self, text: TextTransformer, logit_scale: torch.Tensor | None):
        super().__init__()
        self.text = text
        self.register_buffer("logit_scale", logit_scale)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text(ids)


def text_config(t: nn.Module) -> dict:
    """The ``TextTransformer`` arguments that rebuild the architecture of tower ``t``, read from its modules."""
    block = t.transformer.resblocks[0]
    vocab, width = t.token_embedding.weight.shape
    proj = t.text_projection
    act = getattr(block.mlp, "gelu", None) or block.mlp[1]
    pool = getattr(t, "text_pool_type", getattr(t, "pool_type", "argmax"))
    return dict(context_length=t.positional_embedding.shape[0], vocab_size=vocab, width=width,
                heads=block.attn.num_heads, layers=len(t.transformer.resblocks),
                mlp_ratio=block.mlp.c_fc.out_features / width,
                ls_init_value=1.0 if isinstance(getattr(block, "ls_1", None), LayerScale) else None,
                output_dim=None if proj is None else proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1],
                embed_cls=getattr(t, "cls_emb", None) is not None, no_causal_mask=getattr(t, "attn_mask", None) is None,
                use_pad_mask=getattr(t, "use_pad_mask", False), pool_type=pool,
                eos_id=getattr(t, "text_eos_id", getattr(t, "eos_id", 2)) or 2,
                proj_type="none" if proj is None else "linear",
                proj_bias=isinstance(proj, nn.Linear) and proj.bias is not None, act_layer=type(act),
                norm_layer=functools.partial(type(t.ln_final), eps=t.ln_final.eps))


def clean_clip(clip: nn.Module) -> CleanCLIP:
    """A clean open_clip text tower of ``clip``'s architecture with ``clip``'s text weights in it (the
    same tensors, read-only: their values, dtype and device; nothing is copied). Tensors ``clip`` holds beyond the clean tower's
    (deep prompts inside its blocks) are left out; its block classes, whatever they are, are not used.

    Raises:
        Skip: not an open_clip text tower, or a tensor the clean tower needs is missing from ``clip``.
    """
    t = tower(clip)
    block = t.transformer.resblocks[0] if len(getattr(t.transformer, "resblocks", ())) else None
    if not isinstance(block, ResidualAttentionBlock):  # open_clip's custom blocks (qk-norm, scaled heads...)
        raise Skip(f"no clean reference of {type(clip).__name__}'s text tower: its blocks are "
                   f"{type(block).__name__}, not open_clip's default residual attention blocks, whose options "
                   f"cannot be read back from the modules")
    try:
        config = text_config(t)
    except (AttributeError, IndexError, TypeError) as e:
        raise Skip(f"no clean reference of {type(clip).__name__}'s text tower: its architecture cannot be read "
                   f"({type(e).__name__}: {e})") from e
    with torch.device("meta"):  # no random init of weights about to be replaced
        ref = TextTransformer(**config)
    source = dict(t.named_parameters()) | dict(t.named_buffers())
    wanted = [(n, x) for n, x in list(ref.named_parameters()) + list(ref.named_buffers()) if n != "attn_mask"]
    missing = [n for n, x in wanted if n not in source or source[n].shape != x.shape]
    if missing:
        raise Skip(f"no clean reference of {type(clip).__name__}'s text tower: it lacks {len(missing)} tensor(s) "
                   f"of open_clip's tower of the same architecture (e.g. {missing[0]})")
    for name, _ in wanted:
        owner, _, attr = name.rpartition(".")
        module = ref.get_submodule(owner)
        value = source[name].detach()
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(value, requires_grad=False)
        else:
            module._buffers[attr] = value
    mask = getattr(t, "attn_mask", None)
    ref.attn_mask = None if mask is None else mask.detach()
    scale = getattr(clip, "logit_scale", None)
    return CleanCLIP(ref, None if scale is None else scale.detach()).eval()
