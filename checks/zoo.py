"""The foreign zoo's verdicts (:mod:`checks.faults.zoo`): every audit on each family's clean model,
and each planted fault under the audit that names it; printed as one table, family x audit.

``python -m checks --selftest`` runs it after the planted faults of our own model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .core import CheckResult, Status, get_audit, list_audits
from .faults import SEED
from .faults.zoo import FAMILIES, Family, Fault
from .runner import run_audit, run_audits

#: One letter per status in the table.
LETTER = {Status.PASS: "P", Status.WARN: "W", Status.SKIP: "S", Status.FAIL: "F", Status.ERROR: "E"}


@dataclass
class FamilyRun:
    family: Family
    clean: dict[str, CheckResult]  # audit id -> result on the clean model
    faults: list[tuple[Fault, CheckResult]] = field(default_factory=list)

    def false_alarms(self) -> list[CheckResult]:
        return [r for r in self.clean.values() if r.status.failed]

    def missed(self) -> list[tuple[Fault, CheckResult]]:
        return [(f, r) for f, r in self.faults if not caught(f, r)]


def caught(fault: Fault, result: CheckResult) -> bool:
    return result.status == Status.FAIL and fault.words in result.message


def _seeded(call):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return call()


def run_zoo(clip, tok, names, families=FAMILIES, progress=None) -> list[FamilyRun]:
    """Every audit on each family's clean model; each planted fault under its audit (targets built afresh)."""
    runs = []
    for family in families:
        clean = _seeded(lambda: {r.id: r for r in run_audits(family.clean(clip, tok, names))})
        run = FamilyRun(family, clean)
        for fault in family.faults:
            run.faults.append((fault, _seeded(lambda: run_audit(get_audit(fault.audit), fault.make(clip, tok, names)))))
        runs.append(run)
        if progress is not None:
            progress(run)
    return runs


def cell(run: FamilyRun, audit_id: str) -> str:
    """The clean model's letter, then ``/F`` (caught) or ``/MISSED`` for a fault planted for this audit."""
    r = run.clean.get(audit_id)
    text = LETTER[r.status] if r is not None else "-"
    for fault, result in run.faults:
        if fault.audit == audit_id:
            text += "/F" if caught(fault, result) else f"/{LETTER[result.status]}!"
    return text


def format_zoo(runs: list[FamilyRun]) -> str:
    """Family x audit: P(ASS) W(ARN) S(KIP) F(AIL) E(RROR) on the clean model; ``/F`` a planted fault caught by
    that audit (``/P!`` and the like: missed). Then every SKIP's reason, every false alarm and every miss."""
    audits = list_audits()
    names = [run.family.name for run in runs]
    head = ["audit", *names]
    rows = [[a, *(cell(run, a) for run in runs)] for a in audits]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r).rstrip() for r in rows]
    out.append("P pass, W warn, S skip (reasons below), F fail, E error; /F: the family's planted fault, caught by "
               "that audit; /X!: missed")
    for run in runs:
        out.append(f"{run.family.name}: {run.family.title}")
        out += [f"  SKIP {r.id}: {r.message}" for r in run.clean.values() if r.status == Status.SKIP]
        out += [f"  FALSE ALARM {r.id}: {r.status.value.upper()}: {r.message}" for r in run.false_alarms()]
        out += [f"  MISSED {f.make.__name__} under {f.audit}: expected FAIL with {f.words!r}, got "
                f"{r.status.value.upper()}: {r.message}" for f, r in run.missed()]
    return "\n".join(out)


def summary(runs: list[FamilyRun]) -> dict[str, int]:
    """The counts the issue is judged by."""
    results = [r for run in runs for r in run.clean.values()] + [r for run in runs for _, r in run.faults]
    return {"families": len(runs), "false_fail": sum(r.status == Status.FAIL for run in runs for r in run.clean.values()),
            "error": sum(r.status == Status.ERROR for r in results),
            "faults": sum(len(run.faults) for run in runs),
            "caught": sum(caught(f, r) for run in runs for f, r in run.faults)}
