"""class-list-response: given another class list, the scores have its shape and follow its order."""
from __future__ import annotations

import torch

from .. import contract
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..inputs import probe_videos
from ..locations import locate
from ..models import copy_model, run_model
from ..tolerances import rel_diff, video_tolerance

BATCH = 2
#: How far the scores of the same classes may differ between class lists of other sizes, beyond the
#: forward's own tolerance: the text encoder runs a batch of another size (fp32 matmuls may sum in another
#: order). Measured (docs/studies/beyond_one_prompt.txt): at most 4.9e-7 on the zoo, 1.4e-6 on our model (random
#: ViT-B-32, 101 classes); a list scored in the old order differs by 3.8e-1.
FP32_LIST_TOL = 1e-5


def subset(n: int) -> list[int]:
    """Three classes out of ``n``, not in label order: the last, the first, the middle (two when n is 2)."""
    return list(dict.fromkeys([n - 1, 0, n // 2]))


@audit(
    "class-list-response",
    title="Another class list gives scores for that list, in its order",
    problem="a model that caches its class text features (computed by the first forward or when it was built) "
            "keeps scoring the old classes when it is given a new list (base-to-novel, another dataset, a subset): "
            "the logits have the old shape, or the old order, and accuracy is measured against the wrong classes",
    fix="after a forward on all its classes, the model given a subset of them in another order returns scores "
        "with one column per class of the subset, in its order, equal to the same classes' scores (logits) "
        "before; given that subset reversed, the same scores reversed",
    remediation="recompute the class text when the class list changes (or key the cache to the list and drop it "
                "when the list changes); never compute class features once in __init__ for good",
    needs=("forward", "classes"),
)
def class_list_response(target: AuditTarget) -> Outcome:
    """All classes (warming any cache), then a subset out of order, then that subset reversed."""
    names = list(target.classnames)
    n = len(names)
    if n < 2:
        raise Skip("one class: no other class list to give it")
    model = copy_model(target.model)
    x = probe_videos(target, BATCH)
    full = run_model(target, x, model=model).float()  # [B, n]: the first forward, which fills any cache
    idx = subset(n)
    kind = contract.output_kind(target)[0]
    lists = [("a subset out of label order", idx), ("the same subset reversed", idx[::-1])]
    tol = max(video_tolerance(target).value, FP32_LIST_TOL)
    evidence = [f"a copy of the model: a forward on all {n} classes first (what a cache would keep), then "
                f"for_classes with each list below, each forward on the same {BATCH} probe videos"]
    problems, outs, worst = [], {}, 0.0
    for what, rows in lists:
        chosen = [names[i] for i in rows]
        model = contract.for_classes(target, model, chosen)
        out = run_model(target, x, model=model)
        shape = list(out.shape) if isinstance(out, torch.Tensor) else contract.describe(out)
        evidence.append(f"{what} {chosen}: scores {shape}")
        if not isinstance(out, torch.Tensor) or list(out.shape) != [BATCH, len(rows)]:
            got = f"{out.shape[-1]} classes" if isinstance(out, torch.Tensor) and out.dim() == 2 else shape
            problems.append(f"after a forward on {n} classes, given {len(rows)} ({what}) the model returned logits "
                            f"for {got}, not {len(rows)}: it keeps the class list it had")
            break
        outs[tuple(rows)] = out.float()
        if kind == "logits":  # a class's logit does not depend on the other classes
            d = float(((out.float() - full[:, rows]).abs().amax(-1) / full.abs().amax(-1).clamp_min(1e-12)).max())
            worst = max(worst, d)
            evidence.append(f"  vs the same classes' logits among all {n}: {d:.2e} (relative to the row's largest logit)")
            if d > tol:
                problems.append(f"given {what} {chosen}, the logits differ from those classes' logits among all {n} by "
                                f"{d:.2e} (relative, tolerance {tol:.1e}): the scores do not follow the new list "
                                f"(a cached class text in the old order?)")
                break
    if not problems and kind == "probabilities" and len(outs) == 2:  # probabilities renormalise over a list: order
        a, b = outs[tuple(idx)], outs[tuple(idx[::-1])]
        d = float(rel_diff(b, a.flip(-1)).max())
        worst = max(worst, d)
        evidence.append(f"probabilities: the reversed list's vs the first list's reversed: {d:.2e} (relative)")
        if d > tol:
            problems.append(f"the same {len(idx)} classes reversed give other probabilities than reversed ({d:.2e} "
                            f"relative, tolerance {tol:.1e}): the scores do not follow the order of the list")
    metrics = {"classes": n, "subset": len(idx), "max_rel_diff": worst, "tolerance": tol, "output": kind}
    location = locate(type(target.model).forward)
    if problems:
        return Outcome(Status.FAIL, problems[0], metrics, evidence, location)
    same = (f"equal to those classes' logits among all (max {worst:.1e})" if kind == "logits"
            else f"the reversed list's probabilities reversed (max {worst:.1e})")
    return Outcome(Status.PASS, f"after a forward on {n} classes, {len(idx)} of them out of order and reversed give "
                   f"scores of that shape in that order, {same}", metrics, evidence, location)
