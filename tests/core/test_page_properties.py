"""Properties of a page, for any mix of latencies, failures, timeouts and fallbacks.

Each example runs on trio's virtual clock, so latencies are exact. Latencies
are whole 10 ms steps and timeouts end on 5 ms, so no source finishes on the
very tick its deadline falls.
"""

from __future__ import annotations

import json
from typing import Literal

import anyio
import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpage import NO_FALLBACK, Aggregator, ErrorCode, Section
from helpers import Recorder, run_on_mock_clock

Behaviour = Literal["ok", "fail", "hang"]


@attrs.frozen
class Spec:
    latency: float
    behaviour: Behaviour
    timeout: float
    fallback: bool
    required: bool


specs = st.builds(
    Spec,
    latency=st.integers(0, 30).map(lambda n: n / 100),
    behaviour=st.sampled_from(["ok", "ok", "fail", "hang"]),
    timeout=st.integers(0, 30).map(lambda n: n / 100 + 0.005),
    fallback=st.booleans(),
    required=st.booleans(),
)
page_timeouts = st.none() | st.integers(0, 30).map(lambda n: n / 100 + 0.005)


@settings(max_examples=200, deadline=None)
@given(st.lists(specs, min_size=1, max_size=8), page_timeouts)
def test_page_follows_the_rules(specs: list[Spec], page_timeout: float | None) -> None:
    """One entry per section, an error exactly per failure, status and timing by the rules."""
    sections = [
        Section(
            name=f"s{i}",
            source=Recorder(
                i, delay=3600 if s.behaviour == "hang" else s.latency, fail=s.behaviour == "fail"
            ),
            timeout=s.timeout,
            fallback="fb" if s.fallback else NO_FALLBACK,
            required=s.required,
            breaker=None,
        )
        for i, s in enumerate(specs)
    ]

    async def run() -> tuple[float, dict[str, object]]:
        async with Aggregator(sections, page="page-properties", page_timeout=page_timeout) as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            elapsed = anyio.current_time() - start
        return elapsed, {"page": page, "wire": json.loads(page.to_json())}

    elapsed, out = run_on_mock_clock(run)
    page = out["page"]
    wire = out["wire"]
    assert isinstance(wire, dict)

    expected_codes: dict[str, ErrorCode] = {}
    end_times = []
    for i, s in enumerate(specs):
        limit = s.timeout if page_timeout is None else min(s.timeout, page_timeout)
        finishes = s.behaviour != "hang" and s.latency < limit
        end_times.append(s.latency if finishes else limit)
        if not finishes:
            expected_codes[f"s{i}"] = ErrorCode.TIMEOUT_ERROR
        elif s.behaviour == "fail":
            expected_codes[f"s{i}"] = ErrorCode.SOURCE_ERROR

    # Exactly one entry per section, in order; an error exactly for each failed one.
    assert list(wire["sections"]) == [f"s{i}" for i in range(len(specs))]
    assert {e["section"]: e["code"] for e in wire["errors"]} == {
        k: v.value for k, v in expected_codes.items()
    }
    for i, s in enumerate(specs):
        name = f"s{i}"
        if name not in expected_codes:
            assert wire["sections"][name] == i
        else:
            assert wire["sections"][name] == ("fb" if s.fallback else None)

    # Status: 503 when a required section, or every section, has nothing to show.
    unavailable = {n for n in expected_codes if not specs[int(n[1:])].fallback}
    required_down = any(specs[int(n[1:])].required for n in unavailable)
    expected_status = 503 if required_down or len(unavailable) == len(specs) else 200
    assert page.status_code == expected_status
    assert wire["metadata"]["partialFailure"] == (bool(expected_codes) and expected_status == 200)

    # The page takes as long as its slowest section, and never past its deadline.
    assert abs(elapsed - max(end_times)) < 1e-6
    if page_timeout is not None:
        assert elapsed <= page_timeout + 1e-9
