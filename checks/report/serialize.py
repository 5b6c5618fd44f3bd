"""JSON: a list of results, each with id, status (pass/warn/fail/error/skip), metrics, evidence, location."""
from __future__ import annotations

import json
from collections.abc import Sequence

from ..core import CheckResult


def to_json(results: Sequence[CheckResult]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2, default=str, ensure_ascii=False)
