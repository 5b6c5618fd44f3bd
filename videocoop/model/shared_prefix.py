"""Shared-prefix text encoding: the positions every class shares, computed once.

With unified context and the class token at the end (or middle), positions
``0 … P-1`` (SOS and the shared context) hold the same tokens for every class. Under the
causal mask a position sees only itself and earlier positions, so their hidden states
are identical across classes in every layer. We run those ``P`` positions once (a batch
of one) and each class's suffix (class tokens, ".", EOT: typically 4–8 positions) with
its attention reaching the shared prefix keys and values plus its own causal suffix.
Exact, not an approximation: the result equals the full-length run to float rounding.

Per layer everything but attention is position-wise (``ln_1``, the q/k/v projection,
the out projection, ``ln_2``, the MLP, layer scale), so the prefix rows and all classes'
suffix rows are packed into one ``[P + n_cls * S, width]`` matrix and go through those
modules as one batch; only attention looks at the structure. Two exact ways to attend
from the suffix, chosen per device by measurement (``python -m bench``):

- ``concat``: prefix keys/values broadcast onto each class's and one SDPA call with a
  boolean mask. Copies the prefix keys/values ``n_cls`` times; fine on the CPU.
- ``split``: attend to the prefix (one matmul with every class's queries folded into
  the query axis, nothing copied) and to the causal suffix separately, and merge the two
  softmaxes with their log-sum-exp. Made for the GPU, where the copies cost memory
  traffic.

Written against open_clip's ``ResidualAttentionBlock``; :func:`shareable` says no for
any other block (or a non-causal mask), and the caller runs the plain path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

try:  # the block this path is written against; later open_clip releases may move it
    from open_clip.transformer import ResidualAttentionBlock
except ImportError:  # pragma: no cover - then nothing is shareable
    ResidualAttentionBlock = None

ATTEND = ("concat", "split")


def _is_causal(mask: torch.Tensor | None) -> bool:
    """True when ``mask`` is the additive causal mask (``-inf`` strictly above the diagonal, 0 elsewhere)."""
    if mask is None or mask.is_meta or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    upper = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.isneginf(mask[upper]).all()) and bool((mask[~upper] == 0).all())


def _block_ok(block: nn.Module) -> bool:
    if ResidualAttentionBlock is None or type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return False
    attn = block.attn
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.in_proj_weight is not None
        and attn.bias_k is None
        and not attn.add_zero_attn
        and attn.dropout == 0.0
    )


def shareable(transformer: nn.Module, attn_mask: torch.Tensor | None) -> bool:
    """Whether :func:`encode_shared` computes exactly what ``transformer(x, attn_mask)`` does.

    Needs the causal mask and open_clip's plain residual blocks throughout; anything else
    (custom blocks, cross-attention, no mask) is left to the plain path. Reads the mask,
    so call it once at construction, not in a forward.
    """
    blocks = getattr(transformer, "resblocks", None)
    return bool(blocks) and _is_causal(attn_mask) and all(_block_ok(b) for b in blocks)


def _attend_concat(qs, kp, vp, ks, vs):
    """Suffix queries ``[N, H, S, dh]`` over broadcast prefix keys ``[H, P, dh]`` and causal suffix keys."""
    N, H, S, dh = qs.shape
    P = kp.shape[1]
    k = torch.cat([kp.expand(N, H, P, dh), ks], dim=2)  # [N, H, P + S, dh]
    v = torch.cat([vp.expand(N, H, P, dh), vs], dim=2)
    # Suffix position i is absolute P + i: it sees the whole prefix and suffix 0…i.
    allowed = torch.ones(S, P + S, dtype=torch.bool, device=qs.device).tril(diagonal=P)  # [S, P + S]
    return F.scaled_dot_product_attention(qs, k, v, attn_mask=allowed)  # [N, H, S, dh]


def _attend_split(qs, kp, vp, ks, vs):
    """As :func:`_attend_concat`, without copying the prefix: two softmaxes merged by log-sum-exp."""
    N, H, S, dh = qs.shape
    scale = dh ** -0.5
    qf = qs.transpose(0, 1).reshape(H, N * S, dh)  # every class's queries share the prefix keys
    sp = torch.matmul(qf, kp.transpose(-1, -2)) * scale  # [H, N*S, P]
    ss = torch.matmul(qs, ks.transpose(-1, -2)) * scale  # [N, H, S, S]
    future = torch.ones(S, S, dtype=torch.bool, device=qs.device).triu(1)
    ss = ss.masked_fill(future, float("-inf"))
    lse_p = sp.logsumexp(-1).view(H, N, S).transpose(0, 1)  # [N, H, S]
    lse_s = ss.logsumexp(-1)  # [N, H, S]; finite: each query sees itself
    lse = torch.logaddexp(lse_p, lse_s)  # the normaliser of the joint softmax
    lse_f = lse.transpose(0, 1).reshape(H, N * S, 1)
    op = torch.matmul(torch.exp(sp - lse_f), vp)  # [H, N*S, dh]
    os_ = torch.matmul(torch.exp(ss - lse.unsqueeze(-1)), vs)  # [N, H, S, dh]
    return op.view(H, N, S, dh).transpose(0, 1) + os_


_ATTEND = {"concat": _attend_concat, "split": _attend_split}


@dataclass(frozen=True)
class SharedLayout:
    """Host-side facts about a batch of prompts that the shared path plans with.

    ``prefix_len`` leading positions are the same in every row; ``eot`` is each class's
    EOT position. Known when the prompts are laid out, so the forward never reads them
    back from the device.
    """

    prefix_len: int
    eot: tuple[int, ...]

    @classmethod
    def of(cls, prompt_learner) -> "SharedLayout":
        """The layout of a :class:`~videocoop.model.prompt_learner.PromptLearner`'s prompts (its host-side EOT positions)."""
        return cls(prompt_learner.shared_prefix_len, tuple(prompt_learner.eots))

    def select(self, classes: slice) -> "SharedLayout":
        """The layout of a contiguous range of the classes (the prefix is shared by any subset)."""
        return SharedLayout(self.prefix_len, self.eot[classes])

    def groups(self) -> list[tuple[int, int]]:
        """``[(N_g, S_g)]``: how many classes have each suffix length (positions ``P…EOT``),
        shortest first: the order of a stable sort of the classes by EOT position."""
        counts: dict[int, int] = {}
        for e in sorted(self.eot):
            S = e + 1 - self.prefix_len
            counts[S] = counts.get(S, 0) + 1
        return [(N, S) for S, N in sorted(counts.items())]


def _block(block: nn.Module, rows: torch.Tensor, P: int, shapes: list[tuple[int, int]], attend) -> torch.Tensor:
    """One residual block on packed rows: ``P`` prefix rows, then each group's ``N_g * S_g`` suffix rows."""
    attn = block.attn
    R, w = rows.shape
    H = attn.num_heads
    dh = w // H
    qkv = F.linear(block.ln_1(rows), attn.in_proj_weight, attn.in_proj_bias)  # [R, 3w]
    q, k, v = qkv.view(R, 3, H, dh).unbind(1)  # each [R, H, dh]
    qp, kp, vp = (t[:P].transpose(0, 1) for t in (q, k, v))  # [H, P, dh]
    outs = [F.scaled_dot_product_attention(qp, kp, vp, is_causal=True).transpose(0, 1).reshape(P, w)]
    start = P
    for N, S in shapes:
        qs, ks, vs = (t[start:start + N * S].view(N, S, H, dh).transpose(1, 2) for t in (q, k, v))  # [N, H, S, dh]
        outs.append(attend(qs, kp, vp, ks, vs).transpose(1, 2).reshape(N * S, w))
        start += N * S
    rows = rows + block.ls_1(attn.out_proj(torch.cat(outs)))  # [R, w]
    return rows + block.ls_2(block.mlp(block.ln_2(rows)))


def encode_shared(transformer: nn.Module, x: torch.Tensor, prefix_len: int, groups: list[tuple[int, int]],
                  attend: str = "concat"):
    """Run ``transformer`` on ``x`` ``[n_cls, L, width]`` whose first ``prefix_len`` positions are shared.

    Only row 0's prefix is read: the caller guarantees every row has the same prefix
    (``PromptLearner.shared_prefix_len``). Gradients reach the prefix through row 0 and
    each class's suffix through its own row.

    Args:
        groups: ``[(N_g, S_g)]`` over consecutive rows of ``x`` (sorted by length, see
            :meth:`SharedLayout.groups`): run only positions ``P … P + S_g - 1`` of those
            rows (up to their EOT: later positions cannot change anything at or before
            it).

    Returns:
        ``(prefix [P, width], [suffix [N_g, S_g, width] per group])``: final hidden
        states equal to ``transformer(x, attn_mask=causal)`` at those positions.
    """
    w = x.shape[-1]
    P = prefix_len
    starts = [sum(N for N, _ in groups[:g]) for g in range(len(groups))]
    parts = [x[start:start + N, P:P + S] for start, (N, S) in zip(starts, groups)]  # [N_g, S_g, w]
    rows = torch.cat([x[0, :P]] + [p.reshape(-1, w) for p in parts])  # [P + sum N_g*S_g, w]
    fn = _ATTEND[attend]
    for block in transformer.resblocks:
        rows = _block(block, rows, P, groups, fn)
    suffixes = [t.view(N, S, w) for t, (N, S) in zip(rows[P:].split([N * S for N, S in groups]), groups)]
    return rows[:P], suffixes
