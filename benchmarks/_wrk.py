"""Load from wrk (Debian's ``wrk``, installed by ``scripts/bench``): rate and latency percentiles.

wrk is a C load generator: on this two-core machine it costs the server far
less CPU than a Python client would, and it measures latency per request
(``--latency``: the 50th, 75th, 90th and 99th percentiles). Each run is
bounded by its duration, on loopback.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import attrs

from ._servers import HOST

_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_COUNT = re.compile(r"([0-9]+) requests in")
_PERCENTILE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_ERRORS = re.compile(r"^\s*Socket errors:.*$", re.M)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


class WrkError(RuntimeError):
    """wrk failed, or the server answered something other than 2xx."""


#: wrk, when it is installed.
WRK = shutil.which("wrk")


@attrs.frozen
class WrkRun:
    rate: float  #: requests per second
    requests: int  #: requests completed
    p50: float  #: seconds
    p99: float  #: seconds


def wrk(port: int, target: str, *, seconds: float, connections: int, threads: int = 1) -> WrkRun:
    """``connections`` keep-alive connections asking ``target`` for ``seconds``.

    Any answer other than 2xx or 3xx, or a socket error, is a :class:`WrkError`.
    """
    binary = WRK
    if binary is None:
        raise WrkError("wrk is not installed: run ./scripts/bench, which installs it")
    result = subprocess.run(
        [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
            "--timeout",
            "10s",
            "--latency",
            f"http://{HOST}:{port}{target}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    out = result.stdout
    if result.returncode != 0:
        raise WrkError(f"wrk exited with {result.returncode}: {result.stderr or out}")
    if (bad := _NON_2XX.search(out)) or (bad := _ERRORS.search(out)):
        raise WrkError(f"GET {target}: {bad.group(0).strip()}\n{out}")
    rate, count = _RATE.search(out), _COUNT.search(out)
    percentiles = {int(p): float(v) * _UNIT[u] for p, v, u in _PERCENTILE.findall(out)}
    if rate is None or count is None or set(percentiles) != {50, 99}:
        raise WrkError(f"could not read wrk's output:\n{out}")
    return WrkRun(float(rate.group(1)), int(count.group(1)), percentiles[50], percentiles[99])
