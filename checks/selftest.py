"""``python -m checks --selftest``: every audit on its clean case and on its planted fault, here.

The planted faults (:mod:`checks.faults`) are part of the product so that users can prove,
on their own machines (a CI runner with a GPU, say), that each audit still catches what it is
for and passes what is right: an audit that cannot fail is worth nothing, and one that fails
a correct model is worse. Runs on the tiny random-weight CLIP (nothing is downloaded); the
device audits move their copies to CUDA when it is present, else to the meta device.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from . import faults
from .core import CheckResult, Status, allow_spawn, foreign_device, get_audit, list_audits
from .runner import run_audit, run_audits


@dataclass
class Row:
    """One line of the self-test: an audit, its clean result, its planted fault's result."""

    audit: str
    fault: str
    expected: Status
    words: str
    clean: CheckResult | None  # None: the row checks the runner, not a clean case of its own
    planted: CheckResult

    @property
    def caught(self) -> bool:
        return self.planted.status == self.expected and self.words in self.planted.message

    @property
    def clean_ok(self) -> bool:
        return self.clean is None or self.clean.status == Status.PASS

    @property
    def ok(self) -> bool:
        return self.caught and self.clean_ok


def run_selftest(progress=None) -> list[Row]:
    """Every registered audit on the clean model (with data) and on its planted fault (and the further faults
    of :data:`~checks.faults.ALSO_PLANTED`), plus the runner's own fault (a model raising on its own data); each
    target built afresh, RNG seeded; the audits that start processes run too."""
    with allow_spawn(True):
        return _run_selftest(progress)


def _run_selftest(progress=None) -> list[Row]:
    from videocoop.clip import TINY_MODEL, load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip, tok = load_clip(TINY_MODEL, seed=0)
    names = list(faults.NAMES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(faults.SEED)
        clean = {r.id: r for r in run_audits(faults.with_data(clip, tok, names))}
        for audit_id, make in faults.CLEAN.items():  # audits whose clean case needs its own target
            clean[audit_id] = run_audit(get_audit(audit_id), make(clip, tok, names))
    missing = [i for i in list_audits() if i not in faults.PLANTED]
    if missing:  # an audit without a planted fault cannot be shown to work
        raise AssertionError(f"audits without a planted fault in checks.faults.PLANTED: {missing}")
    also = [(i, p, True) for i, p in faults.ALSO_PLANTED if i in list_audits()]
    cases = [(i, faults.PLANTED[i], True) for i in list_audits()] + also + [(*faults.RUNNER_FAULT, False)]
    rows = []
    for audit_id, planted, own in cases:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(faults.SEED)
            result = run_audit(get_audit(audit_id), planted.make(clip, tok, names))
        row = Row(audit_id if own else f"{audit_id} (runner: model raises)", planted.make.__name__, planted.status,
                  planted.words, clean[audit_id] if own else None, result)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def format_table(rows: list[Row]) -> str:
    """The self-test as a plain-text table: audit, clean result, planted fault, expected, got, verdict."""
    head = ("audit", "clean", "planted fault", "expected", "got", "verdict")
    lines = [(r.audit, "-" if r.clean is None else r.clean.status.value.upper(), r.fault, r.expected.value.upper(),
              r.planted.status.value.upper(),
              "caught" if r.ok else "MISSED" if not r.caught else "FALSE ALARM on the clean case") for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    out = [fmt.format(*line).rstrip() for line in [head, tuple("-" * w for w in widths), *lines]]
    for r in rows:
        if not r.caught:
            out.append(f"missed: {r.audit} on {r.fault}: expected {r.expected.value.upper()} with {r.words!r}, got "
                       f"{r.planted.status.value.upper()}: {r.planted.message}")
        if not r.clean_ok:
            out.append(f"false alarm: {r.audit} on the clean model: {r.clean.status.value.upper()}: {r.clean.message}")
    return "\n".join(out)


def device_line() -> str:
    device = foreign_device()
    where = "CUDA" if device.type == "cuda" else "the meta device (no CUDA here)"
    return (f"audits on the CPU; device audits on {where}; torch {torch.__version__}, {torch.get_num_threads()} "
            f"thread(s)" + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""))
