"""eot-collapse: the class text features are told apart, as far as this CLIP tells names apart."""
from __future__ import annotations

import torch

from .. import reference
from ..causes import deferred, duplicate_names
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..models import text_features
from ..text import (class_word_list, clean_clip, cosine_matrix, natural_prompt_features, probe_classes, prompts_and_tokens,
                    stats, text_location, view_note)
from ..tolerances import tolerance

#: FAIL: some class has a twin within numerical noise (margin = 1 - cosine to its nearest class).
COLLAPSE_MARGIN = 1e-4
#: WARN: the spread (1 - mean cosine) is below this fraction of CLIP's own spread of the class
#: names in a hand-written prompt (NATURAL_PROMPT). Measured (README, "Audits"): random ViT-B-32,
#: the 101 UCF101 names: EOT pooling keeps 0.82-1.16 of it, the seed's mean pooling 0.02-0.17.
SPREAD_RATIO_WARN = 0.3
#: The rows of the hand-written prompt (checks.text.NATURAL_PROMPT) whose encode_text spread is the reference.
NATURAL = "encode_text('a video of a person {name}.')"
BARE = "encode_text(class names)"
#: Classes shown in the similarity heatmap.
HEATMAP_CLASSES = 12
_SHADES = " .:-=+*#%@"


def reference_poolings(target: AuditTarget) -> tuple[dict[str, torch.Tensor], list[str]]:
    """EOT and mean pooling of the same text-transformer states, and CLIP's encode_text of the
    class names (in a hand-written prompt, and bare), all from open_clip alone
    (:mod:`checks.reference`: the suite's clean CLIP), with evidence lines saying how each was computed.

    The states come from the model's own plain pass when it ran CLIP's transformer batch-first
    (captured by :func:`checks.text.plain_text_features`), else from CLIP's transformer run on the
    model's prompt embeddings. The encode_text rows run CLIP's own modules on the first
    max(EOT)+1 positions (:func:`~checks.reference.fast_encode_text`), shown equal to
    ``clip.encode_text`` at the full context length on a sample of the prompts here.
    """
    clip = clean_clip(target)
    prompts, tokens = prompts_and_tokens(target)
    tokens = tokens.long()
    hidden = target.cache.get("hidden")
    source = "the model's own pass through CLIP's transformer"
    if hidden is None:
        hidden = reference.transformer_states(clip, prompts)
        source = "CLIP's transformer run on the model's prompt embeddings"
    eot = reference.clip_eot(clip, tokens)
    with torch.no_grad():
        out = {"eot pooling": reference.eot_pool(clip, hidden, eot), "mean pooling": reference.mean_pool(clip, hidden, eot)}
    evidence = [f"eot/mean pooling rows: {source}, pooled with CLIP's ln_final and projection (checks.reference)"]
    words = class_word_list(target)
    ids = {BARE: target.tokenizer(words)}
    ids[NATURAL], out[NATURAL] = natural_prompt_features(target)  # learning-signal's zero-shot text too: once per run
    out[BARE] = reference.fast_encode_text(clip, ids[BARE])
    if reference.causal(clip):  # the fast reference stands in for encode_text: show it equal here
        sample = probe_classes(len(words))
        agree = reference.fast_agrees(clip, ids[NATURAL][sample], out[NATURAL][sample])
        tol = tolerance(target)
        if agree <= tol.value:
            evidence.append(f"encode_text rows: CLIP's own modules on the first max(EOT)+1 positions under its causal "
                            f"mask; equal to clip.encode_text at {reference.context_length(clip)} positions on "
                            f"{len(sample)} of the prompts within {agree:.1e} (tolerance {tol})")
        else:  # never expected: then the slow reference, exactly encode_text
            for name, i in ids.items():
                out[name] = reference.encode_text(clip, i)["eot"]
            evidence.append(f"encode_text rows: the truncated run differed from clip.encode_text by {agree:.1e} on "
                            f"{len(sample)} prompts (tolerance {tol}): computed with clip.encode_text at full length")
    else:
        evidence.append("encode_text rows: clip.encode_text at the full context length (no causal mask to truncate under)")
    return out, evidence


def heatmap(features: torch.Tensor, names: list[str], k: int = HEATMAP_CLASSES) -> list[str]:
    """A text heatmap of the cosine matrix of the first ``k`` classes, shaded between its
    smallest and largest off-diagonal value."""
    cos = cosine_matrix(features[:k])
    n = cos.shape[0]
    off = cos[~torch.eye(n, dtype=torch.bool)]
    lo, hi = float(off.min()), float(off.max())
    span = max(hi - lo, 1e-12)
    width = max(len(s) for s in names[:n])
    lines = [f"shade: ' ' = {lo:.4f} ... '@' = {hi:.4f} (diagonal '#' = 1)"]
    for i in range(n):
        row = "".join("#" if i == j else _SHADES[min(9, int((float(cos[i, j]) - lo) / span * 10))]
                      for j in range(n))
        lines.append(f"{names[i][:width]:>{width}} |{''.join(c * 2 for c in row)}|")
    return lines


@audit(
    "eot-collapse",
    title="Class text features are distinguishable",
    problem="every class gets (nearly) the same text feature, so the logits cannot separate classes "
            "(the seed's 'EOT collapse')",
    fix="the configured pooling keeps the classes apart about as well as CLIP keeps their names apart",
    remediation="FAIL: look at text-encoder-parity, causal-mask and batch-independence, which name the "
                "usual causes (kept permute, dropped mask, wrong EOT index). WARN: the pooling narrows the "
                "spread CLIP gives the names; compare the other pooling in the table (--text-pool)",
    needs=("text",),
)
def eot_collapse(target: AuditTarget) -> Outcome:
    """Pairwise cosine, margins and effective rank of the class features, beside the references."""
    n = len(target.classnames)
    if n < 2:
        raise Skip("one class: nothing to tell apart")
    configured = text_features(target).cpu()
    rows = {"model (configured pooling)": configured}
    how = [view_note(target)]
    if target.clip_model is not None and target.tokenizer is not None:
        try:
            refs, how_refs = reference_poolings(target)
        except Skip as e:
            how.append(f"no reference rows: {e}")
        else:
            rows.update({k: v.cpu() for k, v in refs.items()})
            how += how_refs
    table = {name: stats(f) for name, f in rows.items()}
    mine = table["model (configured pooling)"]
    natural = table.get(NATURAL)
    pooled_as = None
    for pool in ("eot", "mean"):
        ref = rows.get(f"{pool} pooling")
        if ref is not None and torch.allclose(configured, ref, rtol=1e-3, atol=1e-4):
            pooled_as = pool
    evidence = [f"{name}: mean cos {s['mean_cos']:.4f}, max cos {s['max_cos']:.6f}, min margin "
                f"{s['min_margin']:.2e}, mean margin {s['mean_margin']:.4f}, effective rank "
                f"{s['effective_rank']:.1f} of {n}" for name, s in table.items()]
    if pooled_as:
        evidence.append(f"the model's features equal {pooled_as} pooling of CLIP's states")
    evidence += how
    metrics = {f"{k}": round(v, 6) for k, v in mine.items()}
    metrics["pooling"] = pooled_as or "unknown"
    ratio = None
    if natural is not None:
        ratio = (1 - mine["mean_cos"]) / max(1 - natural["mean_cos"], 1e-12)
        metrics["spread_ratio"] = round(ratio, 4)
        metrics["natural_mean_cos"] = round(natural["mean_cos"], 6)
        evidence.append(f"spread ratio (1 - mean cos) / (1 - mean cos of {NATURAL}) = {ratio:.3f}; "
                        f"WARN below {SPREAD_RATIO_WARN}")
    f = configured
    cos = cosine_matrix(f).masked_fill(torch.eye(n, dtype=torch.bool), -2)
    i, j = divmod(int(cos.argmax()), n)
    names = list(target.classnames)
    extra = {"table": table, "heatmap": heatmap(f, names),
             "cosine": cosine_matrix(f[:HEATMAP_CLASSES]).tolist()}  # drawn as a PNG beside the report
    location = text_location(target, r"pool|argmax|mean\(")
    if mine["min_margin"] < COLLAPSE_MARGIN:
        twins = int((cos > 1 - COLLAPSE_MARGIN).sum()) // 2
        pairs = {(a, b) for a, b in (cos > 1 - COLLAPSE_MARGIN).nonzero().tolist() if a < b}
        cause = deferred(target, "duplicate_names", what="the class features' spread")
        if pairs and pairs <= set(duplicate_names(target)["pairs"]) and cause is not None:
            cause.extra = extra  # twins because they are one name: split-integrity's finding
            return cause
        return Outcome(Status.FAIL, f"classes indistinguishable: {twins} pair(s) with cosine > {1 - COLLAPSE_MARGIN} "
                       f"(e.g. {names[i]!r} ~ {names[j]!r}, cos {float(cos[i, j]):.7f}); mean cos {mine['mean_cos']:.4f}",
                       metrics, evidence, location, extra)
    if ratio is not None and ratio < SPREAD_RATIO_WARN:
        return Outcome(Status.WARN, f"spread {ratio:.2f}x CLIP's own (mean cos {mine['mean_cos']:.4f} vs "
                       f"{natural['mean_cos']:.4f} for {NATURAL}): classes are hard to tell apart",
                       metrics, evidence, location, extra)
    tail = f", {ratio:.2f}x CLIP's own spread" if ratio is not None else ""
    return Outcome(Status.PASS, f"mean cos {mine['mean_cos']:.4f}, min margin {mine['min_margin']:.2e}, "
                   f"effective rank {mine['effective_rank']:.1f} of {n}{tail}", metrics, evidence, location, extra)
