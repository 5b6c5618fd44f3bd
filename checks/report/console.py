"""The rich summary table printed by ``python -m checks``."""
from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ..core import CheckResult, Status

STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.ERROR: "bold magenta",
         Status.SKIP: "dim"}


def print_summary(results: Sequence[CheckResult], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="videocoop checks", show_lines=False)
    for col in ("#", "audit", "status", "s", "finding"):
        table.add_column(col, overflow="fold", justify="right" if col in ("#", "s") else "left")
    for i, r in enumerate(results, 1):
        table.add_row(str(i), r.id, f"[{STYLE[r.status]}]{r.status.value.upper()}[/]", f"{r.duration:.1f}", r.message)
    console.print(table)
