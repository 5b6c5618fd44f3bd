"""text-encoder-parity: on real token embeddings the text encoder is CLIP's encode_text."""
from __future__ import annotations

import torch

from torch import nn

from .. import reference
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..models import forward_text_features
from ..text import (clean_clip, encode, encode_text_references, plain_text_features, probe_classes, prompts_and_tokens,
                    text_location, view_note)
from ..tolerances import rel_diff, tolerance

#: The words put in the context slots: any real text works; this one reads naturally.
TEMPLATE = "a video of a person doing an action in a short clip recorded by a camera with sound"


REFERENCES = {"eot": "encode_text (EOT pooling)", "mean": "encode_text's states mean-pooled over 0..EOT"}


def added_in_tower(target: AuditTarget) -> list[str]:
    """Parameters the model holds inside a CLIP text transformer that the clean CLIP's has not (deep
    prompts in its blocks): the model's text path is then not ``encode_text`` by design."""
    clean = reference.tower(clean_clip(target)).transformer
    names = {n for n, _ in clean.named_parameters()}
    layers = len(clean.resblocks)
    added = []
    for prefix, module in target.model.named_modules():
        blocks = getattr(module, "resblocks", None)
        if isinstance(blocks, nn.ModuleList) and len(blocks) == layers and hasattr(module, "width"):
            added += [f"{prefix}.{n}" for n, _ in module.named_parameters() if n not in names]
    return added


def context_slots(prompts: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
    """Where the prompt embeddings differ from the token embeddings of their own ids:
    the learned slots, found from the model itself ``[n_cls, L]`` bool."""
    return (prompts.float() - embedded.float()).abs().amax(dim=-1) > 1e-6


@audit(
    "text-encoder-parity",
    title="Text encoder = CLIP's encode_text",
    problem="a port of CoOp's TextEncoder that differs from CLIP's own text path (a kept permute, a lost "
            "causal mask, another pooling position or projection) gives features CLIP never produced",
    fix="with the context set to a template's token embeddings, the text encoder equals "
        "clip_model.encode_text of the same token ids",
    remediation="make the text encoder run exactly encode_text's modules on the prompt embeddings: "
                "positional embedding, transformer with clip_model.attn_mask (batch-first on open_clip 3.x, "
                "no permute), ln_final, the EOT token, text_projection",
    needs=("text", "clip", "tokenizer"),
)
def text_encoder_parity(target: AuditTarget) -> Outcome:
    """Fill the context slots with a template's embeddings and compare to encode_text."""
    added = added_in_tower(target)
    if added:
        raise Skip(f"the model's text path holds {len(added)} tensor(s) inside CLIP's text blocks that clean CLIP's "
                   f"have not (e.g. {added[0]}: deep prompts): it is not encode_text by design, so there is nothing "
                   f"to be equal to; causal-mask, batch-independence and eot-collapse judge it")
    text = reference.tower(clean_clip(target))
    prompts, tokens = prompts_and_tokens(target)
    emb = text.token_embedding
    with torch.no_grad():
        embedded = emb(tokens.long().to(emb.weight.device)).to(prompts.device)  # [n_cls, L, width]
    slots = context_slots(prompts, embedded)
    idx = probe_classes(len(target.classnames))
    template = target.tokenizer([TEMPLATE])[0]
    words = template[1: int((template > 0).sum()) - 1]  # the template's ids between SOS and EOT
    ids = tokens[idx].clone()
    for row in range(len(idx)):
        where = slots[idx[row]].nonzero().flatten().to(ids.device)
        ids[row, where] = words.to(ids)[torch.arange(len(where)) % len(words)]
    with torch.no_grad():
        filled = emb(ids.long().to(emb.weight.device)).to(prompts.dtype).to(prompts.device)  # [k, L, width]
        ours = encode(target, filled, ids)
        refs = encode_text_references(target, ids)
    tol = tolerance(target)
    diffs = {pool: rel_diff(ours, ref.to(ours.device)) for pool, ref in refs.items() if ref.shape == ours.shape}
    if not diffs:
        return Outcome(Status.FAIL, f"text encoder output {list(ours.shape)} vs encode_text "
                       f"{list(refs['eot'].shape)}", {"classes": len(idx)}, [], text_location(target))
    pool = min(diffs, key=lambda k: float(diffs[k].max()))
    diff = diffs[pool]  # [k]
    worst = int(diff.argmax())
    length = text.positional_embedding.shape[0]
    evidence = [f"context slots found from the model: {int(slots.sum(1).min())}-{int(slots.sum(1).max())} per class "
                f"(positions where prompt_learner() differs from token_embedding(tokenized_prompts))",
                f"template {TEMPLATE!r} written into the slots of {len(idx)} classes; encode_text on {length} positions",
                "both references from the suite's own clean CLIP (open_clip's text tower of the same architecture, "
                "CLIP's weights in it; checks.reference): its encode_text, and the states of that same pass pooled "
                "with its ln_final and projection (nothing of the model's CLIP modules, nothing of videocoop's)",
                view_note(target)]
    evidence += [f"closest reference: {REFERENCES[pool]}; other: " + ", ".join(
        f"{REFERENCES[k]} {float(d.max()):.2e}" for k, d in diffs.items() if k != pool)]
    evidence += [f"{target.classnames[c]}: max|diff|/max|ref| = {float(d):.2e}" for c, d in zip(idx, diff)]
    evidence.insert(2, tol.note)
    metrics = {"classes": len(idx), "max_rel_diff": float(diff.max()), **tol.metrics(), "pooling": pool,
               "context_slots": int(slots.sum(1).max())}
    location = text_location(target)
    if not slots.any():
        evidence.append("no context slot differs from its token embedding: compared the prompts as they are")
    # The comparison above runs the CoOp call; training runs whatever the model's forward
    # passes the encoder (our shared-prefix layout, say): that must give the same features.
    forward, plain = forward_text_features(target), plain_text_features(target)
    if forward is None:
        evidence.append("the model's forward did not run or never called text_encoder: only the CoOp call was compared")
    else:
        path_diff = rel_diff(forward, plain.to(forward.device))  # [n_cls]
        metrics["forward_path_max_rel_diff"] = float(path_diff.max())
        evidence.append(f"text_encoder inside model(features) vs text_encoder(prompts, tokenized_prompts), all "
                        f"{len(path_diff)} classes: max relative difference {float(path_diff.max()):.2e}")
        if float(path_diff.max()) > tol.value:
            bad = int(path_diff.argmax())
            return Outcome(Status.FAIL, f"the model's own forward computes other text features than its text encoder's "
                           f"CoOp call: {float(path_diff.max()):.2e} (relative) for {target.classnames[bad]!r}; "
                           f"tolerance {tol}", metrics, evidence, location)
    if float(diff.max()) > tol.value:
        return Outcome(Status.FAIL, f"text encoder differs from encode_text by {float(diff.max()):.2e} (relative) "
                       f"for {target.classnames[idx[worst]]!r}, under either pooling; tolerance {tol}",
                       metrics, evidence, location)
    return Outcome(Status.PASS, f"equal to {REFERENCES[pool]} within {float(diff.max()):.1e} (tolerance {tol}) "
                   f"on {len(idx)} classes", metrics, evidence, location)
