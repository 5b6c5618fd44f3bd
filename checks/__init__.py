"""checks: audits that run a CoOp-style model and measure each known failure mode.

``run_audits(target)`` returns one :class:`CheckResult` per audit; ``python -m checks``
builds the target, runs them and writes the reports.

The names below load :mod:`checks.core` or :mod:`checks.runner` (and torch) on first use:
the pytest plugin (:mod:`checks.pytest_plugin`) is imported by every pytest session once
videocoop is installed, and must cost nothing there unless asked.
"""
import importlib
from typing import TYPE_CHECKING

__all__ = ["AuditTarget", "CheckResult", "Outcome", "Skip", "Status", "audit", "exit_code", "list_audits", "run_audits"]
_IN_RUNNER = ("exit_code", "run_audits")  # the others are checks.core's

if TYPE_CHECKING:
    from .core import AuditTarget, CheckResult, Outcome, Skip, Status, audit, list_audits
    from .runner import exit_code, run_audits


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".runner" if name in _IN_RUNNER else ".core", __name__), name)
    raise AttributeError(f"module 'checks' has no attribute {name!r}")
