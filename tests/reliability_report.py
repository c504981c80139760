"""Turn the fault harness's rows into the tables of ``docs/reliability.md``.

``python tests/reliability_report.py ROWS.jsonl docs/reliability.md`` replaces
what stands between the ``<!-- report:start -->`` and ``<!-- report:end -->``
markers with the tables, so the prose around them stays as written.
``scripts/reliability`` runs the harness and then this, in one command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

START = "<!-- report:start -->"
END = "<!-- report:end -->"


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
    """The Redis Cluster figures (``tests/test_redis_cluster.py``), the last row of each."""
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
            "### Four workers, on one Redis and on a Redis Cluster",
            "",
            "| check | figure |",
            "| --- | ---: |",
        ]
        out += [f"| {r['test']} | {r['value']} |" for r in workers]
        out.append("")
    if clusters:
        out += ["### Redis Cluster (3 masters, 3 replicas)", "", *cluster(clusters), ""]
    return "\n".join(out)


def main(rows_path: str, doc_path: str) -> None:
    rows = [json.loads(line) for line in Path(rows_path).read_text().splitlines() if line]
    doc = Path(doc_path)
    text = doc.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{render(rows)}\n{END}{tail}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
