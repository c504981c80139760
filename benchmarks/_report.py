"""Write one run's figures into docs/performance.md, between its markers."""

from __future__ import annotations

import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from ._common import Row

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
BEGIN = "<!-- benchmarks:begin -->"
END = "<!-- benchmarks:end -->"


def table(rows: list[Row], *, quick: bool) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"One run of `python -m benchmarks{' --quick' if quick else ''} --docs`, {when}, "
        f"Python {sys.version.split()[0]}, {platform.machine()}, "
        f"{_cpus()} CPUs.",
        "",
        "| group | figure | value | target | |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for row in rows:
        value = f"{row.value:,.3f}".rstrip("0").rstrip(".") + (row.unit or "")
        target = row.target.text.replace("|", "\\|")
        lines.append(f"| {row.group} | {row.name} | {value} | {target} | {row.verdict} |")
    return "\n".join(lines)


def write_docs(rows: list[Row], *, quick: bool) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + table(rows, quick=quick) + "\n" + text[end:])


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
