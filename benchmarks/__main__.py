"""Run every benchmark: ``python -m benchmarks [--quick]``.

Everything is measured side by side in this one run and printed as ratios;
absolute times on shared machines are noise.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from . import bench_cache, bench_executor, bench_http, bench_redis, bench_workers


async def main(quick: bool) -> int:
    print(f"batchpage benchmarks ({'quick' if quick else 'full'}), Python {sys.version.split()[0]}")
    for title, module in [
        ("executor", bench_executor),
        ("cache", bench_cache),
        ("redis", bench_redis),
        ("http", bench_http),
        ("workers", bench_workers),
    ]:
        print(f"\n[{title}]")
        for row in await module.run(quick):
            print(row.line(), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    raise SystemExit(anyio.run(main, args.quick))
