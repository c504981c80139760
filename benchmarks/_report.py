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
from .bench_scaling import series

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
        if row.group == "scaling" and row.target.met is None:
            continue  # the series: in its own table below
        target = row.target.text.replace("|", "\\|")
        lines.append(f"| {row.group} | {row.name} | {_value(row)} | {target} | {row.verdict} |")
    scaling = [row for row in rows if row.group == "scaling"]
    if scaling:
        batch, sequential = series(scaling, "batch"), series(scaling, "sequential")
        lines += [
            "",
            "Page time against sections (each 50 to 80 ms, the seed's latencies in turn):",
            "",
            "| sections | one batch (ms) | in sequence (ms) |",
            "| ---: | ---: | ---: |",
        ]
        lines += [
            f"| {n} | {b:,.1f} | {s:,.1f} |"
            for (n, b), (_, s) in zip(batch, sequential, strict=True)
        ]
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


def write_plots(rows: list[Row]) -> list[Path]:
    """The docs' plots, as SVG next to docs/performance.md: what this run measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    IMAGES.mkdir(exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "batchpage"  # the same figure gives the same file
    scaling = [row for row in rows if row.group == "scaling"]
    if scaling:
        fig, ax = plt.subplots(figsize=(7, 4))
        for kind, style in (("sequential", "o--"), ("batch", "o-")):
            points = series(scaling, kind)
            ax.plot([n for n, _ in points], [ms for _, ms in points], style, label=kind)
        ax.set_xlabel("sections on the page (each 50 to 80 ms, the seed's latencies)")
        ax.set_ylabel("page time (ms)")
        ax.set_yscale("log")
        ax.set_title("One batch against the same calls in sequence")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, "sections.svg"))
    peers = [row for row in rows if row.group == "peers" and row.unit == "/s"]
    if peers:
        labels = list(dict.fromkeys(row.name.split(":")[0].removeprefix("peers ") for row in peers))
        ours = [_first(peers, f"peers {label}: batchpage rps") for label in labels]
        theirs = [_first(peers, f"peers {label}: gather+cashews rps") for label in labels]
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], ours, width=0.4, label="batchpage")
        ax.bar([x + 0.2 for x in xs], theirs, width=0.4, label="asyncio.gather + cashews")
        ax.set_xticks(list(xs), [label.strip("()") for label in labels], rotation=20, ha="right")
        ax.set_ylabel("requests per second (wrk, 8 connections)")
        ax.set_title("The homepage: batchpage against the endpoint a team writes today")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, "peers.svg"))
    return written


IMAGES = DOC.parent / "images"


def _first(rows: list[Row], prefix: str) -> float:
    return next(row.value for row in rows if row.name.startswith(prefix))


def _save(fig: object, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = IMAGES / f"performance-{name}"
    fig.savefig(path, metadata={"Date": None})  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path
