"""Write one run's figures into the docs, between their markers.

``docs/performance.md`` gets every figure, from a run of every group (a run
of some groups would replace the whole table with part of it, so it is left
alone then); ``docs/deployment.md`` gets the workers group's figures
whenever that group ran (``./scripts/bench --only workers --docs``).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from ._common import Row

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC = DOCS / "performance.md"
BEGIN = "<!-- benchmarks:begin -->"
END = "<!-- benchmarks:end -->"
DEPLOYMENT = DOCS / "deployment.md"
WORKERS_BEGIN = "<!-- benchmarks-workers:begin -->"
WORKERS_END = "<!-- benchmarks-workers:end -->"


def _command() -> str:
    """The command line of this run, as typed (``python -m benchmarks ...``)."""
    return shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])


def _header() -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"One run of `{_command()}`, {when}, Python {sys.version.split()[0]}, "
        f"{platform.machine()}, {_cpus()} CPUs."
    )


def _value(row: Row) -> str:
    return f"{row.value:,.3f}".rstrip("0").rstrip(".") + (row.unit or "")


def table(rows: list[Row]) -> str:
    lines = [
        _header(),
        "",
        "| group | figure | value | target | |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for row in rows:
        target = row.target.text.replace("|", "\\|")
        lines.append(f"| {row.group} | {row.name} | {_value(row)} | {target} | {row.verdict} |")
    return "\n".join(lines)


def workers_table(rows: list[Row]) -> str:
    """The workers group's figures, for docs/deployment.md: the rates side by side."""
    from .bench_workers import doc_table

    return "\n".join([_header(), "", *doc_table(rows)])


def _replace(doc: Path, begin: str, end: str, body: str) -> None:
    text = doc.read_text()
    start, stop = text.index(begin) + len(begin), text.index(end)
    doc.write_text(text[:start] + "\n" + body + "\n" + text[stop:])


def write_docs(rows: list[Row], *, complete: bool) -> list[Path]:
    """Write the tables this run can fill; the files written.

    ``complete``: every group ran, so performance.md's table can be replaced.
    """
    written = []
    if complete:
        _replace(DOC, BEGIN, END, table(rows))
        written.append(DOC)
    workers = [row for row in rows if row.group == "workers"]
    if workers:
        _replace(DEPLOYMENT, WORKERS_BEGIN, WORKERS_END, workers_table(workers))
        written.append(DEPLOYMENT)
    return written


def _cpus() -> int:
    return len(os.sched_getaffinity(0))
