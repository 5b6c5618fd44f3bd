"""checks: audits that run a CoOp-style model and measure each known failure mode.

``run_audits(target)`` returns one :class:`CheckResult` per audit; ``python -m checks``
builds the target, runs them and writes the reports.
"""
from .core import AuditTarget, CheckResult, Outcome, Skip, Status, audit, exit_code, list_audits, run_audits

__all__ = ["AuditTarget", "CheckResult", "Outcome", "Skip", "Status", "audit", "exit_code", "list_audits", "run_audits"]
