"""The right cause, once: root causes that show in several audits at once, each measured once per run and
named by the audit whose job it is.

Logits that do not depend on the video read as a wrong logit scale; dropout left on in evaluation makes
every comparison of two forwards differ (a checkpoint round trip, padding, batch independence, the scale);
two classes of the same name are twins in the text features. The cheap checks below find these causes,
each owned by one audit (:data:`OWNER`); a comparison audit that would FAIL asks :func:`deferred` first
and, when a cause is present, reports a SKIP that names the cause and the audit that owns it instead of
a FAIL of its own. Every check is cached in ``target.cache``; a model that raises here is left to the
audit that runs it (no cause is claimed).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.overrides import TorchFunctionMode

from .core import AuditTarget, Outcome, Status
from .tolerances import FP32_TOL, rel_diff, video_tolerance

#: Videos in the probe batch of the cause checks.
BATCH = 4
#: torch functions that draw random numbers (``dropout`` only when it runs with ``training=True``).
RANDOM_OPS = frozenset({"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
                        "randn", "rand", "randint", "randperm", "randn_like", "rand_like", "randint_like", "normal",
                        "normal_", "bernoulli", "bernoulli_", "uniform_", "multinomial", "poisson", "random_",
                        "exponential_", "geometric_", "cauchy_", "log_normal_"})
#: How far a probability row may sum from 1 (a softmax in fp32 or bf16) and lie outside [0, 1].
PROBABILITY_TOL = 1e-2


class RandomOps(TorchFunctionMode):
    """The random draws a block makes: ``(op, file:line)`` of the audited code that made each."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in RANDOM_OPS:
            training = kwargs.get("training", args[2] if name.endswith("dropout") and len(args) > 2 else True)
            p = kwargs.get("p", args[1] if name.endswith("dropout") and len(args) > 1 else 1.0)
            if not name.endswith("dropout") or (training and p):
                from .trace import call_site

                self.seen.append((name, call_site()))
        return func(*args, **kwargs)

    def sites(self) -> list[str]:
        """Each distinct draw once, in order: ``dropout at file:line (function)``."""
        return list(dict.fromkeys(f"{op} at {site}" for op, site in self.seen))


def _cached(key: str, target: AuditTarget, measure: Callable[[], dict]) -> dict:
    if key not in target.cache:
        try:
            target.cache[key] = measure()
        except Exception:  # noqa: BLE001: the audit that runs the model reports what it raises
            target.cache[key] = {"cause": None}
    return target.cache[key]


def eval_repeat(target: AuditTarget) -> dict:
    """The same probe videos through the eval forward twice (a copy, the model's own device): ``diff``
    (relative, the largest row), ``sites`` (random draws seen), ``cause`` (a sentence, or None)."""
    def measure():
        from .inputs import probe_videos
        from .models import copy_model, run_model

        model = copy_model(target.model)
        x = probe_videos(target, BATCH)
        watch = RandomOps()
        with watch:
            a, b = run_model(target, x, model=model), run_model(target, x, model=model)
        exact = x.device.type == "cpu"
        diff = float(rel_diff(b.float(), a.float()).max()) if a.numel() else 0.0
        same = torch.equal(a, b) if exact else diff <= FP32_TOL
        cause = None
        if not same:
            why = (f"{'; '.join(watch.sites()[:3])} in eval mode" if watch.sites() else
                   "no torch random op ran: numpy or Python random numbers, or state the forward changes between calls")
            cause = f"two eval forwards of the same {BATCH} videos differ by {diff:.2e} (relative): {why}"
        return {"diff": diff, "sites": watch.sites(), "exact": exact, "cause": cause}
    return _cached("cause:eval_repeat", target, measure)


def video_response(target: AuditTarget) -> dict:
    """Logits of different videos (and of an all-zero video): ``cause`` when they are all the same (the
    forward does not read the video), ``probabilities`` when every row is a probability distribution."""
    def measure():
        from .inputs import probe_videos
        from .models import copy_model, run_model

        model = copy_model(target.model)
        x = probe_videos(target, BATCH)
        logits = run_model(target, x, model=model).float()  # [B, n_cls]
        tol = max(video_tolerance(target).value, FP32_TOL)
        spread = float(rel_diff(logits, logits[:1].expand_as(logits)).max())
        try:
            zero = run_model(target, torch.zeros_like(x[:1]), model=model).float()  # [1, n_cls]
            zero_diff = float(rel_diff(zero, logits[:1]).max())
        except Exception:  # noqa: BLE001: an all-zero video may be refused; the different videos decide
            zero_diff = None
        cause = None
        if spread <= tol and (zero_diff is None or zero_diff != zero_diff or zero_diff <= tol):
            zeros = "" if zero_diff is None else f" and of an all-zero video ({zero_diff:.1e})"
            cause = (f"the logits of {BATCH} different videos{zeros} are the same within {max(spread, 0.0):.1e} "
                     f"(relative, tolerance {tol:.0e}): the forward does not read the video features")
        n = logits.shape[-1]
        rows = logits.sum(-1)
        probabilities = None
        declared = target.output == "probabilities"  # by design (a template ensemble): judged as such, no cause
        if not declared and n > 1 and bool(torch.isfinite(logits).all()) and float(logits.min()) >= -PROBABILITY_TOL \
                and float(logits.max()) <= 1 + PROBABILITY_TOL and float((rows - 1).abs().max()) <= PROBABILITY_TOL:
            probabilities = (f"the forward returns probabilities (rows in [0, 1] summing to {float(rows.min()):.4f} to "
                             f"{float(rows.max()):.4f}): a softmax runs inside the forward and cross-entropy applies its "
                             f"own again; a model returning them by design declares AuditTarget(output='probabilities')")
        return {"spread": spread, "zero_diff": zero_diff, "tolerance": tol, "cause": cause,
                "probabilities": probabilities}
    return _cached("cause:video_response", target, measure)


def duplicate_names(target: AuditTarget) -> dict:
    """Class names that are one class once ``_`` is read as a space and case is ignored: ``pairs`` of label
    indices, ``cause`` naming them."""
    def measure():
        from .audits.class_order import key

        first: dict[str, int] = {}
        pairs = []
        for i, name in enumerate(target.classnames):
            k = key(name)
            if k in first:
                pairs.append((first[k], i))
            else:
                first[k] = i
        names = target.classnames
        cause = None if not pairs else (
            f"{len(pairs)} class name(s) repeat once '_' reads as a space: " + ", ".join(
                f"{names[a]!r} (label {a}) = {names[b]!r} (label {b})" for a, b in pairs[:3]))
        return {"pairs": pairs, "cause": cause}
    return _cached("cause:duplicate_names", target, measure)


def checkpoint_keys(target: AuditTarget) -> dict:
    """What the run's own save and load do with the trainable tensors (checkpoint-strictness's own check)."""
    from .audits.checkpoint_strictness import saved_state_cause

    return _cached("cause:checkpoint_keys", target, lambda: saved_state_cause(target))


#: A cause -> (the audit whose job it is, its check, the key of the finding in the check's result).
OWNER: dict[str, tuple[str, Callable[[AuditTarget], dict], str]] = {
    "nondeterministic": ("determinism", eval_repeat, "cause"),
    "ignores_video": ("learning-signal", video_response, "cause"),
    "probabilities": ("learning-signal", video_response, "probabilities"),
    "duplicate_names": ("split-integrity", duplicate_names, "cause"),
    "checkpoint_keys": ("checkpoint-strictness", checkpoint_keys, "cause"),
}


def cause(target: AuditTarget, name: str) -> str | None:
    """The finding of cause ``name`` (:data:`OWNER`) on this target, or None."""
    _, check, field = OWNER[name]
    return check(target).get(field)


def deferred(target: AuditTarget, *names: str, what: str = "this comparison") -> Outcome | None:
    """A SKIP naming the first cause of ``names`` present and the audit that owns it, or None.

    Called by a comparison audit before it FAILs: its numbers cannot be trusted while the cause is present,
    and the cause is reported once, by the audit whose job it is.
    """
    for name in names:
        found = cause(target, name)
        if found:
            owner = OWNER[name][0]
            return Outcome(Status.SKIP, f"deferred to {owner}: {found}; {what} cannot be judged until {owner} passes",
                           {"deferred_to": owner, "cause": name},
                           [f"cause found first ({owner} names it): {found}"])
    return None
