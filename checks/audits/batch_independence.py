"""batch-independence: a class's text feature does not depend on the other classes."""
from __future__ import annotations

import torch

from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..models import text_features
from ..text import encode, probe_classes, prompts_and_tokens, text_location, view_note
from ..tolerances import rel_diff, tolerance


@audit(
    "batch-independence",
    title="Each class is encoded independently",
    problem="CoOp's permute(1, 0, 2) kept on open_clip's batch-first transformer makes the classes the "
            "attention sequence: every class feature mixes in all the others",
    fix="the classes are the batch dimension; a class encodes the same alone or with all others",
    remediation="remove the permute(1, 0, 2) pair around the transformer (open_clip >= 2.26 is batch-first) "
                "and pass the causal mask",
    needs=("text",),
)
def batch_independence(target: AuditTarget) -> Outcome:
    """Encode probe classes one at a time and compare with the all-class forward."""
    n = len(target.classnames)
    if n < 2:
        raise Skip("one class: nothing to be independent of")
    prompts, tokens = prompts_and_tokens(target)
    together = text_features(target)
    idx = probe_classes(n)
    alone = torch.cat([encode(target, prompts[i:i + 1], tokens[i:i + 1]) for i in idx])
    diff = rel_diff(alone, together[idx].to(alone.device))
    tol = tolerance(target)
    evidence = [f"{target.classnames[i]}: alone vs with all {n}: {float(d):.2e} (relative)" for i, d in zip(idx, diff)]
    evidence += [tol.note, view_note(target)]
    metrics = {"classes": len(idx), "max_rel_diff": float(diff.max()), **tol.metrics()}
    location = text_location(target, r"permute|transformer\(")
    worst = idx[int(diff.argmax())]
    if float(diff.max()) > tol.value:
        return Outcome(Status.FAIL, f"{target.classnames[worst]!r} encodes differently alone than with the other "
                       f"classes ({float(diff.max()):.2e} relative, tolerance {tol}): classes mix inside attention",
                       metrics, evidence, location)
    return Outcome(Status.PASS, f"{len(idx)} classes encode the same alone as with all {n} "
                   f"(max {float(diff.max()):.1e}, tolerance {tol})", metrics, evidence, location)
