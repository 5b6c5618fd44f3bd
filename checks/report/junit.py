"""JUnit XML for CI: FAIL -> failure, ERROR -> error, SKIP -> skipped; WARN passes with its message."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from ..core import CheckResult, Status

_CHILD = {Status.FAIL: "failure", Status.ERROR: "error", Status.SKIP: "skipped"}


def to_junit(results: Sequence[CheckResult], suite: str = "checks") -> str:
    counts = {s: sum(r.status == s for r in results) for s in Status}
    root = ET.Element("testsuite", name=suite, tests=str(len(results)), failures=str(counts[Status.FAIL]),
                      errors=str(counts[Status.ERROR]), skipped=str(counts[Status.SKIP]),
                      time=f"{sum(r.duration for r in results):.3f}")
    for r in results:
        case = ET.SubElement(root, "testcase", classname=suite, name=r.id, time=f"{r.duration:.3f}")
        if r.status in _CHILD:
            child = ET.SubElement(case, _CHILD[r.status], message=r.message)
            if r.status != Status.SKIP:
                child.text = "\n".join(r.evidence + [f"remediation: {r.remediation}"])
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join([f"{r.status.value.upper()}: {r.message}", f"location: {r.location}"] + r.evidence)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
