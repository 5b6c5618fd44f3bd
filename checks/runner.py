"""Running the audits: each audit's outcome becomes a :class:`~checks.core.CheckResult`, and an
exception out of an audit is judged: a finding about the audited code (FAIL, naming the frame
and the likely fix) or a crash of the audit itself (ERROR)."""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import contract
from .core import (AuditSpec, AuditTarget, CheckResult, Outcome, Skip, Status, allow_spawn, audit_device, get_audit,
                   list_audits, spawning_allowed)
from .locations import CHECKS, FAULTS, locate, relpath
from .models import handed_over

#: Evidence lines kept per result; the rest are counted, not shown.
MAX_EVIDENCE = 14
#: Characters kept of a result's one-line message.
MAX_MESSAGE = 300


def run_audit(spec: AuditSpec, target: AuditTarget) -> CheckResult:
    """Run one audit: its needs first (:func:`checks.contract.preflight`: unmet, SKIP naming what to
    declare), then the audit; a crash becomes ERROR, :class:`Skip` becomes SKIP."""
    start = time.perf_counter()
    target = on_its_device(target)
    try:
        if target.cache.get("no_values"):
            raise Skip(target.cache["no_values"])
        handed_over(target)  # before any forward of the audits' own (the preflight's probe) can leave state behind
        contract.preflight(target, spec.needs)
        out = spec.func(target)
        if out.status == Status.PASS and not (out.metrics or out.evidence):
            out = Outcome(Status.ERROR, "the audit examined nothing, so it cannot pass")
        if not spec.correctness and out.status == Status.FAIL:
            out.status = Status.WARN
    except Skip as e:
        out = Outcome(Status.SKIP, str(e))
    except Exception as e:  # noqa: BLE001: the audited code raised (a finding), or the audit crashed
        out = raised(e, target, spec)
    message = out.message if len(out.message) <= MAX_MESSAGE else out.message[:MAX_MESSAGE - 3] + "..."
    evidence = list(out.evidence)
    if target.cache.get("home_note") and out.status != Status.SKIP:
        evidence.insert(0, target.cache["home_note"])
    if len(evidence) > MAX_EVIDENCE:
        evidence = evidence[:MAX_EVIDENCE] + [f"... {len(evidence) - MAX_EVIDENCE} more"]
    return CheckResult(
        id=spec.id, title=spec.title, status=out.status, message=message, problem=spec.problem,
        fix=spec.fix, remediation=spec.remediation, metrics=out.metrics, evidence=evidence,
        location=out.location, duration=round(time.perf_counter() - start, 3), extra=out.extra,
    )


def run_audits(target: Any, ids: Sequence[str] | None = None,
               progress: Callable[[CheckResult], None] | None = None, device: str | None = None,
               spawn: bool = False) -> list[CheckResult]:
    """Run the audits ``ids`` (all when None) on ``target`` (an AuditTarget or a bare model).

    Every audit runs on the CPU; ``device`` says where the device audits move a copy of
    the model: ``"cuda"``, ``"cpu"`` (the meta device stands in) or None (CUDA when present).
    ``spawn``: the audits that start processes (distributed-equivalence) run too (else they SKIP
    saying how to opt in; a caller that already allowed it, such as the self-test, keeps it).

    Raises:
        VideoCoopError: an unknown audit id (the message lists the valid ones), an unknown
            device, ``"cuda"`` without CUDA, or a declaration naming no known option (``combine``,
            ``output``, ``temporal_kind``).
    """
    target = on_its_device(AuditTarget.coerce(target))
    contract.check_declarations(target)
    specs = [get_audit(i) for i in (ids or list_audits())]
    results = []
    with audit_device(device), allow_spawn(spawn or spawning_allowed()):
        for spec in specs:
            result = run_audit(spec, target)
            results.append(result)
            if progress is not None:
                progress(result)
    return results


def on_its_device(target: AuditTarget) -> AuditTarget:
    """The target as the audits run it: on the device its model is on (inputs are built there). A model
    on the meta device holds no values, so it is audited through ``rebuild()`` on the CPU, said in every
    result; without ``rebuild`` every audit SKIPs saying so. The meta device stands in for an accelerator
    on machines without one; on CUDA the model is audited where it is."""
    if target.cache.get("home_checked"):
        return target.cache.get("twin", target)
    from .inputs import home

    target.cache["home_checked"] = True
    if home(target.model).type != "meta":
        return target
    if target.rebuild is None:
        target.cache["no_values"] = ("the model is on the meta device, which holds no values to audit: give "
                                     "AuditTarget(rebuild=...) (a factory of the same model) or hand over the model "
                                     "on the CPU or CUDA")
        return target
    twin = dataclasses.replace(target, model=target.rebuild(), cache={"home_checked": True})
    twin.cache["home_note"] = (f"the model is on the meta device, which holds no values: audited through "
                               f"AuditTarget.rebuild() ({type(twin.model).__name__}) on the CPU")
    target.cache["twin"] = twin
    return twin


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when nothing failed (WARN and SKIP allowed), 1 on any FAIL or ERROR."""
    return 1 if any(r.status.failed for r in results) else 0


#: Where libraries live: their frames are neither the audited code nor the audits.
_LIBRARIES = (os.path.dirname(os.path.abspath(torch.__file__)),)


def _library(filename: str) -> bool:
    if filename.startswith("<") or filename.startswith(os.path.dirname(os.__file__)):  # stdlib, <frozen ...>
        return True
    return filename.startswith(_LIBRARIES) or f"{os.sep}open_clip{os.sep}" in filename


def _code_of(target: AuditTarget) -> tuple[set[str], set[str]]:
    """``(directories, files)`` holding the audited code: the package (or file) of each of the
    model's module classes, of its datasets, its collate function, trainer and factories;
    libraries (torch, open_clip, the standard library) and the audits themselves left out."""
    objs: list[Any] = [type(m) for m in target.model.modules()] + [type(d) for _, d in target.datasets()]
    objs += [o for o in (target.collate_fn, target.trainer, target.make_optimizer, target.rebuild) if o is not None]
    objs += [getattr(target, name) for name in contract.DECLARATIONS if callable(getattr(target, name, None))]
    dirs, files = set(), set()
    for obj in objs:
        name = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
        module = sys.modules.get(name or "")
        path = getattr(module, "__file__", None)
        if not path or _library(os.path.abspath(path)):
            continue
        path = os.path.abspath(path)
        if path.startswith(CHECKS):
            if path.startswith(FAULTS):
                dirs.add(FAULTS)
            continue
        top = sys.modules.get(name.split(".")[0])
        if getattr(top, "__path__", None) and getattr(top, "__file__", None):
            dirs.add(os.path.dirname(os.path.abspath(top.__file__)))
        else:
            files.add(path)
    return dirs, files


#: What usually fixes an exception the model raises on its own inputs, by what its message says.
_FIXES = (
    (("dtype", "Half", "BFloat16", "scalar type"),
     "cast the inputs to the model's dtype in its forward (features.to(self.dtype), as CoOp casts its images), or "
     "keep the parts that meet the data in fp32: the features on disk are float32"),
    (("same device", "device type", "on cpu", "on cuda", "meta"),
     "register every tensor the forward reads as a buffer and build new tensors with device=x.device"),
    (("shape", "size", "dimension", "mat1 and mat2"),
     "make the forward accept what the trainer gives it: features [B, T, D] (D the CLIP's embedding dim) and, for "
     "padded batches, a mask [B, T]"),
)


def likely_fix(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    for words, fix in _FIXES:
        if any(w in text for w in words):
            return fix
    return "make the audited code run on the inputs training will give it (the frame above is where it broke)"


def raised(e: BaseException, target: AuditTarget, spec: AuditSpec | None = None) -> Outcome:
    """An exception out of an audit. Raised in the audited code (the model, its dataset, its
    collate, trainer or factories): a FAIL naming the exception, the frame and the likely fix.
    Raised anywhere else (the audit's own code, or CLIP called by it): ERROR, the audit crashed."""
    frames = traceback.extract_tb(e.__traceback__)
    message = (str(e).splitlines() or [""])[0]
    dirs, files = _code_of(target)
    for i in range(len(frames) - 1, -1, -1):  # the innermost frame of the audited code or of the audits decides
        path = os.path.abspath(frames[i].filename)
        if frames[i].name == "__torch_function__":
            continue  # a watch of the audits' (the dtypes, the host reads) passing an op on: transparent
        if path.startswith(CHECKS) and not path.startswith(FAULTS):
            break  # the audits' own code (or a hook of theirs) raised: the audit crashed
        if path in files or (dirs and path.startswith(tuple(dirs))):
            f = frames[i]
            where = f"{relpath(f.filename)}:{f.lineno}"
            audits = os.path.join(CHECKS, "audits")
            caller = next((g for g in reversed(frames[:i]) if os.path.abspath(g.filename).startswith(audits)), None)
            evidence = [f"raised at {where} in {f.name}" + (f": {f.line}" if f.line else ""),
                        f"{type(e).__name__}: {message}"]
            checks_frame = next((g for g in reversed(frames[:i]) if os.path.abspath(g.filename).startswith(CHECKS)), None)
            if caller is not None:
                evidence.append(f"called by the audit at {relpath(caller.filename)}:{caller.lineno} ({caller.name}), "
                                f"with inputs such as training gives")
            elif spec is not None and checks_frame is not None:  # the preflight ran the model for the audit
                audit_at = locate(spec.func) or spec.id
                evidence.append(f"called by the audit at {audit_at} ({spec.func.__name__}), through its preflight at "
                                f"{relpath(checks_frame.filename)}:{checks_frame.lineno} ({checks_frame.name}), with "
                                f"inputs such as training gives")
            evidence.append("a finding about the audited code, not a crash of the audit")
            fix = likely_fix(e)
            # the dataset when the frame is one of its methods (a fault file may hold a dataset and a model)
            who = "the dataset" if any(_source(type(d)) == path and hasattr(type(d), f.name)
                                       for _, d in target.datasets()) else "the model"
            return Outcome(Status.FAIL, f"{who} raised {type(e).__name__}: {message} at {where} ({f.name}); "
                           f"likely fix: {fix}", {"raised": type(e).__name__}, evidence, where)
    return crashed(e, frames)


def crashed(e: BaseException, frames) -> Outcome:
    """ERROR: the audit itself crashed (or CLIP, or the suite's own reference, called by it), named at
    the audit's line and at the innermost line of the suite's code, never as the model's failure."""
    mine = [f for f in frames if os.path.abspath(f.filename).startswith(CHECKS) and f.name != "__torch_function__"
            and not os.path.abspath(f.filename).startswith(FAULTS)]
    audits = os.path.join(CHECKS, "audits")
    at_audit = next((f for f in reversed(mine) if os.path.abspath(f.filename).startswith(audits)), None)
    inner = mine[-1] if mine else frames[-1]
    where = f"{relpath(inner.filename)}:{inner.lineno} ({inner.name})"
    if at_audit is not None and at_audit is not inner:
        where = f"{relpath(at_audit.filename)}:{at_audit.lineno} ({at_audit.name}), in {where}"
    tb = frames[-1]
    return Outcome(Status.ERROR, f"the audit crashed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]} at {where}",
                   evidence=[f"raised at {tb.filename}:{tb.lineno} in {tb.name}",
                             "a crash of the audit (or of the suite's own reference), not a finding about the model"],
                   location=f"{relpath(inner.filename)}:{inner.lineno}")


def _source(obj) -> str | None:
    try:
        return os.path.abspath(inspect.getsourcefile(obj) or "")
    except TypeError:
        return None
