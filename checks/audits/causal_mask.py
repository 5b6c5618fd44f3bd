"""causal-mask: what follows the EOT cannot change the pooled feature."""
from __future__ import annotations

import torch

from .. import reference
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..text import (clean_clip, encode, eot_index, eot_token_id, probe_classes, probe_references, prompts_and_tokens,
                    text_location, view_note)
from ..tolerances import rel_diff, tolerance


def _extend(prompts: torch.Tensor, tokens: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Append ``extra`` padding positions (copies of the last embedding, id 0)."""
    pad = prompts[:, -1:].expand(-1, extra, -1)
    return torch.cat([prompts, pad], 1), torch.cat([tokens, tokens.new_zeros(tokens.shape[0], extra)], 1)


@audit(
    "causal-mask",
    title="Positions after EOT change nothing pooled",
    problem="without CLIP's causal mask (dropped to silence a shape error) the EOT attends to the padding "
            "after it, which is the same for every class and swamps the class tokens",
    fix="the transformer runs with clip_model.attn_mask, so positions after the EOT cannot reach it (a tower "
        "built without a causal mask, as MobileCLIP's, is instead held to encode_text at the full context length)",
    remediation="pass attn_mask=clip_model.attn_mask (sliced to the prompt length) to the transformer; "
                "pool at the EOT (or over positions <= EOT), never at the last position; on a tower without a "
                "causal mask, run the full context length (no truncation)",
    needs=("text",),
)
def causal_mask(target: AuditTarget) -> Outcome:
    """Scramble every position after each class's EOT (embeddings and ids) and re-encode."""
    if built_without_causal_mask(target):
        return without_causal_mask(target)
    prompts, tokens = prompts_and_tokens(target)
    idx = probe_classes(len(target.classnames))
    p, t = prompts[idx], tokens[idx]
    eot = eot_index(target, t)
    evidence = [view_note(target)]
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
    t2 = torch.where(after, torch.randint(1, max(top, 2), t.shape, generator=g).to(t), t)
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
    location = text_location(target, r"attn_mask|mask")
    worst = int(diff.argmax())
    if float(diff.max()) > tol.value:
        return Outcome(Status.FAIL, f"changing the tokens after EOT changed the pooled feature of {names[worst]!r} "
                       f"by {float(diff.max()):.2e} (relative, tolerance {tol}): no causal mask, or pooling past the EOT",
                       metrics, evidence, location)
    return Outcome(Status.PASS, f"tokens after EOT change nothing pooled (max {float(diff.max()):.1e}, "
                   f"{len(names)} classes)", metrics, evidence, location)


def built_without_causal_mask(target: AuditTarget) -> bool:
    """Whether CLIP's open_clip text tower has no causal mask (False when unknown: no CLIP, another tower)."""
    if target.clip_model is None:
        return False
    try:
        return getattr(reference.tower(clean_clip(target)), "attn_mask", None) is None
    except Skip:
        return False


def without_causal_mask(target: AuditTarget) -> Outcome:
    """A text tower built without a causal mask (open_clip's ``no_causal_mask``, MobileCLIP):
    every position, padding included, reaches the EOT by design, so the probe of what follows
    it does not apply. What must hold instead: the model's encoder, on its own prompt layout,
    equals encode_text at the full context length (a prompt cut to max(EOT) + 1, exact under a
    causal mask, is not here)."""
    clip = clean_clip(target)
    text = reference.tower(clip)
    length = text.positional_embedding.shape[0]
    prompts, tokens = prompts_and_tokens(target)
    idx = probe_classes(len(target.classnames))
    ids = tokens[idx]
    emb = text.token_embedding
    with torch.no_grad():  # the ids' own embeddings: placeholder tokens in the context slots
        embedded = emb(ids.long().to(emb.weight.device)).to(prompts.dtype).to(prompts.device)  # [k, L, width]
    ours = encode(target, embedded, ids)
    refs = probe_references(target)  # encode_text of these ids (the tolerance's floor reads them too)
    diffs = {pool: rel_diff(ours, ref.to(ours.device)) for pool, ref in refs.items()}
    pool = min(diffs, key=lambda k: float(diffs[k].max()))
    diff = diffs[pool]  # [k]
    tol = tolerance(target)
    L = tokens.shape[1]
    evidence = [f"{type(target.clip_model).__name__}'s text tower has no causal mask (attn_mask None: built bidirectional, "
                f"open_clip's no_causal_mask): positions after the EOT reach it by design",
                f"the model's prompts hold {L} of the {length} positions; encoded with their own ids' embeddings "
                f"and compared with encode_text ({'EOT' if pool == 'eot' else 'mean'} pooling) on {length}",
                tol.note]
    evidence += [f"{target.classnames[c]}: max|diff|/max|ref| = {float(d):.2e}" for c, d in zip(idx, diff)]
    metrics = {"classes": len(idx), "causal_mask": False, "prompt_length": L, "context_length": length,
               "max_rel_diff": float(diff.max()), **tol.metrics()}
    location = text_location(target, r"attn_mask|mask")
    worst = target.classnames[idx[int(diff.argmax())]]
    if float(diff.max()) > tol.value:
        cut = (f"its prompts are cut to {L} of the {length} positions, which only a causal mask makes exact: "
               if L < length else "")
        return Outcome(Status.FAIL, f"no causal mask by design in this text tower, and {cut}the text encoder differs "
                       f"from encode_text at the full context length by {float(diff.max()):.2e} (relative) for "
                       f"{worst!r}; tolerance {tol}", metrics, evidence, location)
    return Outcome(Status.PASS, f"no causal mask by design in this text tower (tokens after the EOT reach it, so that "
                   f"probe does not apply); the prompts run all {L} positions and equal encode_text within "
                   f"{float(diff.max()):.1e} (tolerance {tol}) on {len(idx)} classes", metrics, evidence, location)
