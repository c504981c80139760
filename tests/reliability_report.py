"""Turn the fault harness's rows into the tables of ``docs/reliability.md`` and ``deployment.md``.

``python tests/reliability_report.py ROWS.jsonl DOC...`` rewrites, in each
document, what stands between its markers, so the prose around them stays
as written: between ``<!-- report:start -->`` and ``<!-- report:end -->``
every table (``docs/reliability.md``); between ``<!-- report-cluster:start
-->`` and ``<!-- report-cluster:end -->`` the Redis Cluster's figures alone
(``docs/deployment.md``). ``scripts/reliability`` runs the harness and then
this, in one command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

START = "<!-- report:start -->"
END = "<!-- report:end -->"
CLUSTER_START = "<!-- report-cluster:start -->"
CLUSTER_END = "<!-- report-cluster:end -->"


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))


def matrix(rows: Iterable[dict[str, Any]]) -> list[str]:
    lines = [
        "| component | fault | pages | what the pages did | worst page / deadline | "
        "deadline kept | sections lost | stale or fallback served | notes |",
        "| --- | --- | ---: | --- | ---: | :---: | ---: | ---: | --- |",
    ]
    for r in rows:
        kept = "yes" if r["kept"] else "**no**"
        lines.append(
            f"| {r['component']} | {r['fault']} | {r['pages']} | {_statuses(r['statuses'])} | "
            f"{r['worst_ms']:.0f} / {r['deadline_ms']:.0f} ms | {kept} | "
            f"{r['sections_lost']} | {r['stand_ins']} | {r['note']} |"
        )
    return lines


def soak(row: dict[str, Any]) -> list[str]:
    names = ("tasks", "threads", "sockets", "fds", "rssBytes")
    lines = [
        f"{row['requests']:,} requests ({_statuses(row['statuses'])}), "
        f"{row['invalidations']} invalidations from another instance; page time p50 "
        f"{row['p50_ms']} ms, p99 {row['p99_ms']} ms, worst {row['max_ms']} ms; "
        "Redis connections open / pooled (before, middle, after): "
        + ", ".join(
            f"{a} / {b}" for a, b in zip(row["redis_sockets"], row["redis_pool"], strict=True)
        )
        + ".",
        "",
        "| reading | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for moment in ("before", "middle", "after"):
        values = [
            f"{row[moment][n] / 2**20:.1f} MiB" if n == "rssBytes" else str(row[moment][n])
            for n in names
        ]
        lines.append(f"| {moment} | " + " | ".join(values) + " |")
    return lines


def cluster(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The Redis Cluster figures (``tests/redis/test_redis_cluster.py``), the last row of each."""
    latest = {r["test"]: r for r in rows}
    lines = ["| check | figure |", "| --- | --- |"]
    spread = latest.get("key spread")
    if spread:
        lines.append(
            f"| {spread['users']:,} users' personal keys per master | "
            f"{', '.join(f'{n:,}' for n in spread['per_master'])} "
            f"(max / mean {spread['max_over_mean']}; {spread['slots_used']:,} slots) |"
        )
    trips = latest.get("warm page round trips")
    if trips:
        lines.append(
            f"| warm page from Redis ({trips['sections']} sections, global and personal): "
            f"slots per page / MGETs / round trips | {trips['slots_per_page']} / "
            f"{trips['mget_per_page_max']} / {trips['round_trips_per_page_max']} at most "
            f"({trips['round_trips_per_page_mean']} on average, {trips['pages']} pages) |"
        )
    failover = latest.get("master killed under load")
    if failover:
        lines += [
            f"| master of the page's slot SIGKILLed under load: pages | {failover['pages']:,} "
            f"({_statuses(failover['statuses'])}), {failover['pages_during_failover']:,} "
            "before hits resumed |",
            f"| worst page / deadline | {failover['worst_page_ms']:.0f} / "
            f"{failover['deadline_ms']:.0f} ms |",
            f"| first Redis error / replica promoted / Redis hits again (s after the kill) | "
            f"{failover['first_outage_s']} / {failover['replica_promoted_s']} / "
            f"{failover['hits_resumed_s']} |",
            f"| back-offs (outages) during the failover | {failover['outages']} |",
        ]
    return lines


def render(rows: list[dict[str, Any]]) -> str:
    faults = [r for r in rows if "kind" not in r]
    soaks = [r for r in rows if r.get("kind") == "soak"]
    workers = [r for r in rows if r.get("kind") == "workers"]
    clusters = [r for r in rows if r.get("kind") == "cluster"]
    out = ["### Fault matrix", "", *matrix(faults), ""]
    if soaks:
        out += ["### Soak", "", *soak(soaks[-1]), ""]
    if workers:
        out += [
            "### Four workers of each example, on one Redis and on a Redis Cluster",
            "",
            "| check | figure |",
            "| --- | ---: |",
        ]
        out += [f"| {r['test']} | {r['value']} |" for r in workers]
        out.append("")
    if clusters:
        out += ["### Redis Cluster (3 masters, 3 replicas)", "", *cluster(clusters), ""]
    return "\n".join(out)


def render_cluster(rows: list[dict[str, Any]]) -> str:
    """The cluster's figures for docs/deployment.md: keys, round trips, failover, workers on it."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"From one run of `./scripts/reliability`, {when}.", ""]
    out += cluster(r for r in rows if r.get("kind") == "cluster")
    out += [
        f"| {r['test']} | {r['value']} |"
        for r in rows
        if r.get("kind") == "workers" and r.get("shared") == "Redis Cluster"
    ]
    return "\n".join(out)


#: Each document's markers, and what goes between them.
SECTIONS: list[tuple[str, str, Callable[[list[dict[str, Any]]], str]]] = [
    (START, END, render),
    (CLUSTER_START, CLUSTER_END, render_cluster),
]


def main(rows_path: str, *doc_paths: str) -> None:
    rows = [json.loads(line) for line in Path(rows_path).read_text().splitlines() if line]
    for doc_path in doc_paths:
        doc = Path(doc_path)
        text = doc.read_text()
        found = False
        for start, end, make in SECTIONS:
            if start not in text:
                continue
            found = True
            head, _, rest = text.partition(start)
            _, _, tail = rest.partition(end)
            text = f"{head}{start}\n{make(rows)}\n{end}{tail}"
        if not found:
            raise SystemExit(f"{doc_path}: no report markers")
        doc.write_text(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
