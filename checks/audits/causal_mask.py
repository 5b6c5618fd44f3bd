"""causal-mask: what follows the EOT cannot change the pooled feature."""
from __future__ import annotations

import torch

from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..probe import (eot_index, eot_token_id, encode, locate, probe_classes, prompts_and_tokens, rel_diff,
                     text_encoder, tolerance)


def _extend(prompts: torch.Tensor, tokens: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Append ``extra`` padding positions (copies of the last embedding, id 0)."""
    pad = prompts[:, -1:].expand(-1, extra, -1)
    return torch.cat([prompts, pad], 1), torch.cat([tokens, tokens.new_zeros(tokens.shape[0], extra)], 1)


@audit(
    "causal-mask",
    title="Positions after EOT change nothing pooled",
    problem="without CLIP's causal mask (dropped to silence a shape error) the EOT attends to the padding "
            "after it, which is the same for every class and swamps the class tokens",
    fix="the transformer runs with clip_model.attn_mask, so positions after the EOT cannot reach it",
    remediation="pass attn_mask=clip_model.attn_mask (sliced to the prompt length) to the transformer; "
                "pool at the EOT (or over positions <= EOT), never at the last position",
)
def causal_mask(target: AuditTarget) -> Outcome:
    """Scramble every position after each class's EOT (embeddings and ids) and re-encode."""
    te = text_encoder(target)
    prompts, tokens = prompts_and_tokens(target)
    idx = probe_classes(len(target.classnames))
    p, t = prompts[idx], tokens[idx]
    eot = eot_index(target, t)
    evidence = []
    extended = int(eot.min()) >= t.shape[1] - 1
    if extended:
        p, t = _extend(p, t, 2)
        evidence.append("every probed prompt ends at its EOT: appended 2 padding positions")
    after = torch.arange(t.shape[1], device=t.device)[None, :] > eot[:, None]  # [k, L]
    rows = after.any(1)
    if not rows.any():
        raise Skip("no prompt has a position after its EOT")
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(p.shape, generator=g).to(p.device, p.dtype) * p.float().std().to(p.dtype)
    p2 = torch.where(after.unsqueeze(-1), p + noise, p)
    top = (eot_token_id(target) or int(t.max())) - 1  # new ids stay below the EOT id: argmax still finds it
    t2 = torch.where(after, torch.randint(1, max(top, 2), t.shape, generator=g).to(t.device), t)
    if not extended:  # the model's own prompt length: an encoder failing there is an ERROR, not a SKIP
        base, moved = encode(target, p, t), encode(target, p2, t2)
    else:
        encode(target, prompts[idx], tokens[idx])  # the unextended baseline must run (else ERROR)
        try:
            base, moved = encode(target, p, t), encode(target, p2, t2)
        except RuntimeError as e:  # longer than the encoder allows: the probe cannot apply
            raise Skip(f"the text encoder rejects the probe prompts ({str(e).splitlines()[0]})") from e
    diff = rel_diff(moved[rows], base[rows])
    tol = tolerance(target)
    names = [target.classnames[c] for c, r in zip(idx, rows.tolist()) if r]
    evidence += [f"{len(names)} classes, {int(after.sum())} positions after EOT scrambled (embeddings + ids)"]
    evidence += [f"{name}: pooled feature moved by {float(d):.2e} (relative)" for name, d in zip(names, diff)]
    evidence.append(tol.note)
    metrics = {"classes": len(names), "positions_scrambled": int(after.sum()), "max_rel_change": float(diff.max()),
               **tol.metrics()}
    location = locate(type(te).forward, r"attn_mask|mask") or locate(type(te).forward)
    worst = int(diff.argmax())
    if float(diff.max()) > tol.value:
        return Outcome(Status.FAIL, f"changing the tokens after EOT changed the pooled feature of {names[worst]!r} "
                       f"by {float(diff.max()):.2e} (relative, tolerance {tol}): no causal mask, or pooling past the EOT",
                       metrics, evidence, location)
    return Outcome(Status.PASS, f"tokens after EOT change nothing pooled (max {float(diff.max()):.1e}, "
                   f"{len(names)} classes)", metrics, evidence, location)

