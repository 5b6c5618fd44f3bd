"""Renderers of one list of :class:`~checks.core.CheckResult`: markdown (en, ko), JSON, JUnit, console."""
from .console import print_summary
from .junit import to_junit
from .markdown import RunInfo, to_markdown, to_step_summary
from .serialize import to_json

__all__ = ["RunInfo", "print_summary", "to_json", "to_junit", "to_markdown", "to_step_summary"]
