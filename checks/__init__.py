"""checks: audits that run a CoOp-style model and measure each known failure mode.

``run_audits(target)`` returns one :class:`CheckResult` per audit; ``python -m checks``
builds the target, runs them and writes the reports.

The names below load :mod:`checks.core` (and torch) on first use: the pytest plugin
(:mod:`checks.pytest_plugin`) is imported by every pytest session once videocoop is
installed, and must cost nothing there unless asked.
"""
from typing import TYPE_CHECKING

__all__ = ["AuditTarget", "CheckResult", "Outcome", "Skip", "Status", "audit", "exit_code", "list_audits", "run_audits"]

if TYPE_CHECKING:
    from .core import AuditTarget, CheckResult, Outcome, Skip, Status, audit, exit_code, list_audits, run_audits


def __getattr__(name: str):
    if name in __all__:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'checks' has no attribute {name!r}")
