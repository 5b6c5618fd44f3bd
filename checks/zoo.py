"""The foreign zoo's verdicts (:mod:`checks.faults.zoo`): every audit on each family's clean model,
and each planted fault under the audit that names it; printed as one table, family x audit.

``python -m checks --selftest`` runs it after the planted faults of our own model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .core import CheckResult, Status, get_audit, list_audits
from .faults import SEED
from .faults.zoo import Family, Fault
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


def run_zoo(clip, tok, names, families=None, progress=None) -> list[FamilyRun]:
    """Every audit on each family's clean model; each planted fault under its audit (targets built afresh).
    ``families``: :data:`~checks.faults.zoo.FAMILIES` when None."""
    from .faults import zoo

    runs = []
    for family in zoo.FAMILIES if families is None else families:
        clean = _seeded(lambda: {r.id: r for r in run_audits(family.clean(clip, tok, names))})
        run = FamilyRun(family, clean)
        for fault in family.faults:
            if fault.audit not in list_audits():  # a fault planted for an audit this suite does not have: missed
                run.faults.append((fault, CheckResult(fault.audit, fault.audit, Status.SKIP, f"no audit {fault.audit!r} "
                                                      f"in this suite", "", "", "")))
                continue
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


def format_markdown(runs: list[FamilyRun]) -> str:
    """The table as docs/foreign_models.md shows it: audits down, families across; a SKIP's reason as a
    numbered note under the table; a planted fault caught by an audit marked in its cell."""
    notes: dict[str, int] = {}
    rows = []
    for a in list_audits():
        cells = []
        for run in runs:
            r = run.clean.get(a)
            text = r.status.value.upper() if r is not None else "-"
            if r is not None and r.status == Status.SKIP:
                text += f" ({notes.setdefault(r.message, len(notes) + 1)})"
            for fault, result in run.faults:
                if fault.audit == a:
                    text += f"; fault {'FAIL' if caught(fault, result) else result.status.value.upper() + ' (missed)'}"
            cells.append(text)
        rows.append(f"| `{a}` | " + " | ".join(cells) + " |")
    head = "| audit | " + " | ".join(run.family.name for run in runs) + " |"
    out = [head, "|" + "---|" * (len(runs) + 1), *rows, ""]
    out += [f"{n}. {message}" for message, n in notes.items()]
    return "\n".join(out)


def ok(runs: list[FamilyRun]) -> bool:
    """No false alarm on a clean model, no ERROR, every planted fault caught."""
    counts = summary(runs)
    return counts["false_fail"] == 0 and counts["error"] == 0 and counts["caught"] == counts["faults"]


def summary_line(runs: list[FamilyRun], seconds: float) -> str:
    counts = summary(runs)
    return (f"{'OK' if ok(runs) else 'FAILED'}: the zoo: {counts['families']} families, {counts['false_fail']} false "
            f"FAIL, {counts['error']} ERROR, {counts['caught']} of {counts['faults']} planted faults caught "
            f"({seconds:.1f} s)")


def summary(runs: list[FamilyRun]) -> dict[str, int]:
    """The counts the issue is judged by."""
    results = [r for run in runs for r in run.clean.values()] + [r for run in runs for _, r in run.faults]
    return {"families": len(runs), "false_fail": sum(r.status == Status.FAIL for run in runs for r in run.clean.values()),
            "error": sum(r.status == Status.ERROR for r in results),
            "faults": sum(len(run.faults) for run in runs),
            "caught": sum(caught(f, r) for run in runs for f, r in run.faults)}
