"""What the demo prints, and the claims it checks while it prints them.

Every section states what it shows as :class:`Check` entries (the claim, what was
observed, whether it held). The demo ends with all of them in one table and exits
non-zero if any failed, so ``make demo`` doubles as an end-to-end test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

__all__ = ["Check", "Report", "status_table"]

STATUS_ORDER = ("pending", "running", "waiting", "completed", "failed", "cancelled")


@dataclass
class Check:
    """One claim a section makes, what was observed, and whether the claim held."""

    section: str
    claim: str
    observed: str
    ok: bool


@dataclass
class Report:
    """The console, the checks so far and the inspection commands to end with."""

    console: Console
    checks: list[Check] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def check(self, section: str, claim: str, ok: bool, observed: str) -> bool:
        self.checks.append(Check(section, claim, observed, bool(ok)))
        return bool(ok)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def section(self, number: int, title: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{number}. {title}[/]", align="left")

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)

    def progress(self) -> Progress:
        return Progress(
            TextColumn("  {task.description:<34}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )

    def print_checks(self) -> None:
        table = Table(title="Checks", header_style="bold", title_justify="left")
        table.add_column("section")
        table.add_column("claim")
        table.add_column("observed")
        table.add_column("", justify="center")
        for c in self.checks:
            table.add_row(
                c.section, c.claim, c.observed, "[green]OK[/]" if c.ok else "[bold red]FAILED[/]"
            )
        self.console.print(table)


def status_table(title: str, counts: Counter[tuple[str, str]]) -> Table:
    """Runs by kind (rows) and status (columns), with totals."""
    kinds = sorted({kind for kind, _ in counts})
    statuses = [s for s in STATUS_ORDER if any(status == s for _, status in counts)]
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("kind")
    for status in statuses:
        table.add_column(status, justify="right")
    table.add_column("total", justify="right")
    for kind in kinds:
        row = [counts[(kind, status)] for status in statuses]
        table.add_row(kind, *_numbers(row), f"{sum(row):,}")
    table.add_row(
        "all",
        *_numbers(sum(counts[(k, s)] for k in kinds) for s in statuses),
        f"{sum(counts.values()):,}",
    )
    return table


def _numbers(values: Iterable[int]) -> list[str]:
    return [f"{v:,}" for v in values]
