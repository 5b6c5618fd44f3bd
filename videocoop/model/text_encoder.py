"""open_clip's own text path, run on prompt embeddings instead of token ids."""
from __future__ import annotations

import torch
from torch import nn

from ..clip.loader import text_tower
from ..utils.errors import VideoCoopError
from .prompt_learner import eot_positions
from .shared_prefix import ATTEND, SharedLayout, encode_shared, shareable

POOLS = ("eot", "mean")
SHARED_PREFIX_MODES = ("auto", "off") + ATTEND
# What "auto" runs per device type, from `python -m bench` (docs/benchmarks.md). On the
# CPU the step is FLOP-bound and the shared prefix wins clearly (5x over truncation at
# UCF101 scale); "split" and "concat" run equally fast there and "split" peaks lower. On
# CUDA the step is bound by launches and memory traffic; an earlier prototype lost to the
# plain truncated path there and "split" has not been measured on a GPU yet, so CUDA stays
# on the plain path until a GPU run of the benchmark says otherwise.
SHARED_PREFIX_AUTO = {"cpu": "split"}


class TextEncoder(nn.Module):
    """The frozen CLIP text transformer applied to prompt embeddings.

    Positional embedding, transformer with the model's causal mask, ``ln_final``,
    pooling, projection: the same modules ``clip_model.encode_text`` uses, so with the
    context set to real token embeddings the two agree to float precision.

    Input is batch-first ``[n_cls, L, width]``, as open_clip >= 2.26 expects: its
    ``Transformer`` transposes internally when built with ``batch_first=False``, and later
    releases drop the attribute altogether, so we never permute here. (CoOp's
    ``permute(1, 0, 2)`` kept on open_clip 3.x mixes classes in attention.)

    It runs the ``L`` positions it is given. ``PromptLearner`` hands it only the first
    ``max(EOT) + 1``: exact under the causal mask, and decided once at construction so
    the forward needs no host read of the EOT indices.

    Given the prompts' ``layout`` (``SharedLayout.of(prompt_learner)``: the positions every
    class shares and each class's EOT), it computes the shared positions once instead of
    once per class (:mod:`videocoop.model.shared_prefix`); equal to the plain path to float
    rounding. Without it (CoOp's two-argument call) it runs the plain path.

    Args:
        clip_model: an open_clip CLIP or CustomTextCLIP with an open_clip text tower.
        pool: ``eot`` pools the EOT token, as CLIP does; ``mean`` averages positions
            0…EOT inclusive (the seed report's fix for collapse).
        eot_token_id: the tokenizer's EOT id; ``None`` uses ``argmax`` of the ids (CLIP's
            convention, valid because its EOT has the largest id).
        shared_prefix: how to use a shared prefix: ``auto`` (per device type, see
            ``SHARED_PREFIX_AUTO``), ``off`` (always the plain path), or an attention
            variant of the shared path (``concat``, ``split``). The attribute may be
            changed later. Any mode falls back to the plain path when the tower's blocks
            are not open_clip's plain residual blocks or the mask is not causal.
    """

    def __init__(self, clip_model: nn.Module, pool: str = "eot", eot_token_id: int | None = None,
                 shared_prefix: str = "auto"):
        super().__init__()
        if pool not in POOLS:
            raise VideoCoopError(f"unknown text pool {pool!r}; choose one of {', '.join(POOLS)}")
        if shared_prefix not in SHARED_PREFIX_MODES:
            raise VideoCoopError(
                f"unknown shared_prefix mode {shared_prefix!r}; choose one of {', '.join(SHARED_PREFIX_MODES)}"
            )
        text = text_tower(clip_model)
        if getattr(text, "cls_emb", None) is not None:
            raise VideoCoopError(f"{type(clip_model).__name__} pools a CLS token appended to the text (CoCa); not supported")
        pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
        if pool_type not in ("argmax", "eos"):
            raise VideoCoopError(f"text pool type {pool_type!r} of this CLIP is not supported (argmax or eos only)")
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.positional_embedding = text.positional_embedding  # frozen CLIP parameter, shared
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", getattr(text, "attn_mask", None), persistent=False)
        self.pool = pool
        if eot_token_id is None and pool_type == "eos":
            eot_token_id = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
        self.eot_token_id = eot_token_id
        self.shared_prefix = shared_prefix
        self.shareable = shareable(self.transformer, self.attn_mask)  # read once, here, not per forward

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the transformer computes in (fp16/bf16 for half-precision CLIP)."""
        get = getattr(self.transformer, "get_cast_dtype", None)
        return get() if get is not None else self.ln_final.weight.dtype

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``ln_final`` output -> joint embedding space."""
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def pool_states(self, x: torch.Tensor, eot: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Pool final hidden states ``[n_cls, L, width]`` at (``eot``) or up to (``mean``) each EOT.

        With ``prefix`` ``[P, width]`` (states every class shares), ``x`` holds positions
        ``P…`` of each class and ``eot`` still counts from position 0; mean pooling adds
        the prefix states to each class's own. ``ln_final`` is per position, so for EOT
        pooling it runs on the pooled rows only.
        """
        P = 0 if prefix is None else prefix.shape[0]
        rows = torch.arange(x.shape[0], device=x.device)
        if self.pool == "eot":
            return self.ln_final(x[rows, eot - P])  # [n_cls, width]
        x = self.ln_final(x)
        keep = torch.arange(x.shape[1], device=x.device)[None, :] <= (eot - P)[:, None]  # [n_cls, L - P]
        summed = (x * keep.unsqueeze(-1).to(x.dtype)).sum(dim=1)  # [n_cls, width]
        if prefix is not None:
            summed = summed + self.ln_final(prefix).sum(dim=0)
        return summed / (eot + 1).unsqueeze(-1).to(x.dtype)  # [n_cls, width]

    def shared_mode(self, device: torch.device, shared_prefix_len: int) -> str:
        """The path a forward on ``device`` takes: ``off`` (plain) or an attention variant."""
        if shared_prefix_len < 2 or not self.shareable:
            return "off"  # sharing SOS alone saves nothing
        if self.shared_prefix == "auto":
            return SHARED_PREFIX_AUTO.get(torch.device(device).type, "off")
        return self.shared_prefix

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor,
                layout: SharedLayout | None = None) -> torch.Tensor:
        """Class text features ``[n_cls, embed_dim]`` (fp32, not normalised).

        Args:
            prompts: prompt embeddings ``[n_cls, L, width]``.
            tokenized_prompts: their token ids ``[n_cls, L]`` (only the EOT position is read).
            layout: ``SharedLayout.of(prompt_learner)``: how many leading positions every
                class shares and each class's EOT, so the shared path computes the prefix
                once and skips every class's padding. Only row 0's prefix is read there,
                so it must describe ``prompts``. None: the plain path.
        """
        L = prompts.shape[1]
        dtype = self.dtype
        x = prompts.to(dtype) + self.positional_embedding[:L].to(dtype)  # [n_cls, L, width]
        eot = eot_positions(tokenized_prompts, self.eot_token_id)  # [n_cls], on the prompts' device
        P = min(layout.prefix_len, L - 1) if layout is not None else 0  # one own position at least
        mode = self.shared_mode(prompts.device, P)
        if mode == "off":
            mask = None if self.attn_mask is None else self.attn_mask[:L, :L]
            x = self.transformer(x, attn_mask=mask)  # batch-first in, batch-first out
            x = self.pool_states(x, eot)
        else:
            # Classes sorted by length on the device (no host read, no cached index
            # tensors that .to() would not move); the layout counts each length group.
            order = torch.argsort(eot, stable=True)  # [n_cls]
            prefix, suffixes = encode_shared(self.transformer, x[order], P, layout.groups(), mode)  # [P, w], [[N_g, S_g, w]]
            eot = eot[order]
            pooled, start = [], 0
            for s in suffixes:
                pooled.append(self.pool_states(s, eot[start:start + s.shape[0]], prefix))  # [N_g, w]
                start += s.shape[0]
            x = torch.cat(pooled)[order.argsort()]  # [n_cls, w], class order again
        return self.project(x).float()
