"""The aggregator: one page from many sources, whatever they do."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import pytest

from batchpage import (
    Aggregator,
    AggregatorNotRunning,
    ErrorCode,
    MemoryCache,
    RequestContext,
    Section,
    UnknownSectionError,
)
from helpers import Recorder, run_on_mock_clock

pytestmark = pytest.mark.anyio

SEED = {
    "featuredProducts": 0.080,
    "newArrivals": 0.060,
    "featuredStores": 0.070,
    "featuredEvents": 0.050,
    "featuredOffers": 0.065,
    "flashSales": 0.075,
}


def seed_sections(**overrides: Recorder) -> list[Section]:
    return [
        Section(name=name, source=overrides.get(name, Recorder([name], delay=delay)))
        for name, delay in SEED.items()
    ]


def test_six_sections_take_the_slowest_not_the_sum() -> None:
    """The seed's six sources (80/60/70/50/65/75 ms) finish together in 80 ms."""

    async def run() -> float:
        async with Aggregator(seed_sections(), page="homepage") as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            elapsed = anyio.current_time() - start
        assert page.status_code == 200
        assert page.errors == []
        assert page.total_ms == pytest.approx(80)
        return elapsed

    assert run_on_mock_clock(run) == pytest.approx(0.080)


async def test_wire_shape_matches_the_design() -> None:
    """sections, errors and metadata, with camelCase keys, as bytes and as dicts."""
    async with Aggregator(seed_sections(), page="homepage", version="v1") as agg:
        page = await agg.fetch()
    wire = json.loads(page.to_json())
    assert wire == page.to_dict()
    assert list(wire) == ["sections", "errors", "metadata"]
    assert wire["sections"] == {name: [name] for name in SEED}
    assert wire["errors"] == []
    meta = wire["metadata"]
    assert set(meta) == {
        "partialFailure",
        "generatedAt",
        "version",
        "cache",
        "timingsMs",
        "totalMs",
    }
    assert meta["partialFailure"] is False
    assert meta["version"] == "v1"
    assert meta["generatedAt"].endswith("Z")
    assert meta["cache"] == dict.fromkeys(SEED, "BYPASS")
    assert set(meta["timingsMs"]) == set(SEED)


async def test_one_failed_section_is_null_with_one_error_and_200() -> None:
    """A failing source costs its section, never the page."""
    sections = seed_sections(featuredEvents=Recorder(fail=True))
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.status_code == 200
    assert page.sections["featuredEvents"] is None
    assert page.sections["featuredProducts"] == ["featuredProducts"]
    assert [(e.section, e.code) for e in page.errors] == [
        ("featuredEvents", ErrorCode.SOURCE_ERROR)
    ]
    assert page.metadata["partialFailure"] is True


async def test_timed_out_section_reports_timeout_error() -> None:
    """A hanging section is cut at its timeout; the message says how long."""
    sections = [
        Section(name="fast", source=Recorder(1)),
        Section(name="hang", source=Recorder(delay=60), timeout=0.05),
    ]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.to_dict()["errors"] == [
        {"section": "hang", "code": "TIMEOUT_ERROR", "message": "timed out after 50 ms"}
    ]
    assert page.status_code == 200


async def test_fallback_value_stands_in() -> None:
    """A failed section with a fallback serves it, and still reports the error."""
    sections = [
        Section(name="a", source=Recorder(fail=True), fallback=[]),
        Section(name="b", source=Recorder(1)),
    ]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.sections["a"] == []
    assert page.errors[0].section == "a"
    assert page.status_code == 200


async def test_fallback_callable_receives_the_context() -> None:
    """A callable fallback is called with the request context."""
    section = Section(
        name="a", source=Recorder(fail=True), fallback=lambda ctx: {"for": ctx.user_id}
    )
    async with Aggregator([section], page="aggregator") as agg:
        page = await agg.fetch(RequestContext(user_id="7"))
    assert page.sections["a"] == {"for": "7"}


async def test_all_failed_is_503() -> None:
    """Nothing to show: 503, same shape."""
    sections = [Section(name=n, source=Recorder(fail=True)) for n in ("a", "b")]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.status_code == 503
    assert page.metadata["partialFailure"] is False
    assert len(page.errors) == 2
    assert page.sections == {"a": None, "b": None}


async def test_all_failed_with_fallbacks_is_200() -> None:
    """Fallbacks standing in for every section keep the page up."""
    sections = [Section(name=n, source=Recorder(fail=True), fallback=[]) for n in ("a", "b")]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.status_code == 200
    assert page.metadata["partialFailure"] is True


async def test_failed_required_section_is_503() -> None:
    """A page without its required section is no page."""
    sections = [
        Section(name="a", source=Recorder(fail=True), required=True),
        Section(name="b", source=Recorder(1)),
    ]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.status_code == 503
    assert page.sections["b"] == 1


async def test_sync_and_async_sources_mix() -> None:
    """Plain functions and coroutines serve one page together."""
    sections = [
        Section(name="a", source=Recorder("async")),
        Section(name="b", source=lambda ctx: "sync"),
    ]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.sections == {"a": "async", "b": "sync"}


async def test_sections_subset_and_unknown_names() -> None:
    """A request may ask for some sections; an unknown name is an error before any call."""
    source = Recorder(1)
    sections = [Section(name="a", source=source), Section(name="b", source=Recorder(2))]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch(sections=["b"])
        assert page.sections == {"b": 2}
        with pytest.raises(UnknownSectionError, match="unknown section"):
            await agg.fetch(sections=["b", "nope"])
    assert source.calls == 0


async def test_fetch_outside_context_manager_is_an_error() -> None:
    """The aggregator owns background work, so it must be entered first."""
    agg = Aggregator([Section(name="a", source=Recorder())], page="aggregator")
    with pytest.raises(AggregatorNotRunning, match="async with"):
        await agg.fetch()


async def test_context_reaches_the_source_with_the_deadline() -> None:
    """Sources see the user, the parameters, and the page deadline."""
    source = Recorder()
    async with Aggregator(
        [Section(name="a", source=source)], page="aggregator", page_timeout=2
    ) as agg:
        before = anyio.current_time()
        await agg.fetch(RequestContext(user_id="u1", params={"limit": 3}))
    ctx = source.contexts[0]
    assert (ctx.user_id, dict(ctx.params)) == ("u1", {"limit": 3})
    assert before + 2 - 0.5 <= ctx.deadline <= before + 2 + 0.5


def test_page_deadline_cuts_every_late_section() -> None:
    """At the page deadline, what has not answered is cancelled and reported."""

    async def run() -> None:
        slow = Recorder(delay=0.3)
        sections = [
            Section(name="fast", source=Recorder(delay=0.05)),
            Section(name="slow", source=slow, timeout=1),
        ]
        async with Aggregator(sections, page="aggregator", page_timeout=0.1) as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            assert anyio.current_time() - start == pytest.approx(0.1)
        assert page.errors[0].code is ErrorCode.TIMEOUT_ERROR
        assert page.errors[0].message == "page deadline reached after 100 ms"
        assert page.sections["fast"] is None or page.sections["fast"] == "ok"

    run_on_mock_clock(run)


def test_stream_yields_fastest_first() -> None:
    """Each section arrives when its source answers, not when the slowest does."""

    async def run() -> list[tuple[str, float]]:
        arrivals: list[tuple[str, float]] = []
        async with Aggregator(seed_sections(), page="aggregator") as agg:
            start = anyio.current_time()
            async for result in agg.stream():
                arrivals.append((result.name, round(anyio.current_time() - start, 3)))
        return arrivals

    arrivals = run_on_mock_clock(run)
    assert arrivals == sorted(((n, d) for n, d in SEED.items()), key=lambda a: a[1])


def test_closing_a_stream_early_cancels_the_rest() -> None:
    """A consumer that leaves stops the remaining sources; nothing runs on."""

    async def run() -> None:
        slow = Recorder(delay=10)
        sections = [Section(name="fast", source=Recorder()), Section(name="slow", source=slow)]
        async with Aggregator(sections, page="aggregator") as agg:
            stream = agg.stream()
            first = await stream.__anext__()
            assert first.name == "fast"
            await stream.aclose()
            start = anyio.current_time()
        # Leaving the aggregator did not wait for the slow source.
        assert anyio.current_time() == start
        assert slow.calls == 1

    run_on_mock_clock(run)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # task enumeration is asyncio's
async def test_nothing_outlives_a_fetch() -> None:
    """After fetch returns, no task of the page is still running."""
    sections = [Section(name="a", source=Recorder(delay=60), timeout=0.02)] + [
        Section(name=f"s{i}", source=Recorder(i)) for i in range(5)
    ]
    async with Aggregator(sections, page="aggregator") as agg:
        before = len(asyncio.all_tasks())
        await agg.fetch()
        assert len(asyncio.all_tasks()) == before


async def test_stream_lines_are_json_ready() -> None:
    """A streamed result serialises to the NDJSON line of the HTTP stream."""
    async with Aggregator([Section(name="a", source=Recorder({"x": 1}))], page="aggregator") as agg:
        results = [r async for r in agg.stream()]
    assert results[0].to_dict() == {
        "section": "a",
        "data": {"x": 1},
        "error": None,
        "cache": "BYPASS",
        "timingMs": results[0].to_dict()["timingMs"],
    }


async def test_unserializable_value_is_a_section_error() -> None:
    """A value the serializer cannot write fails its section, not the page."""
    sections = [
        Section(name="a", source=Recorder(object())),
        Section(name="b", source=Recorder(1)),
    ]
    async with Aggregator(sections, page="aggregator") as agg:
        page = await agg.fetch()
    assert page.errors[0].code is ErrorCode.SERIALIZATION_ERROR
    assert page.status_code == 200


def test_an_aggregator_can_serve_successive_event_loops() -> None:
    """Entering the same aggregator under asyncio, then trio, then asyncio again works."""
    agg = Aggregator([Section(name="a", source=Recorder(1))], page="aggregator")

    async def once() -> int:
        async with agg:
            return (await agg.fetch()).status_code

    assert [anyio.run(once, backend=b) for b in ("asyncio", "trio", "asyncio")] == [200] * 3


def test_fail_fast_cancels_the_rest_when_a_required_section_fails() -> None:
    """With fail_fast, a failed required section ends the page at once: the rest is CANCELLED."""

    async def run() -> None:
        slow = Recorder(delay=0.5)
        sections = [
            Section(name="must", source=Recorder(delay=0.01, fail=True), required=True),
            Section(name="slow", source=slow, fallback=[]),
            Section(name="fast", source=Recorder("ok")),
        ]
        async with Aggregator(sections, page="aggregator", fail_fast=True) as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            assert anyio.current_time() - start == pytest.approx(0.01)
        codes = {e.section: e.code for e in page.errors}
        assert codes == {"must": ErrorCode.SOURCE_ERROR, "slow": ErrorCode.CANCELLED}
        assert page.sections == {"must": None, "slow": [], "fast": "ok"}
        assert page.status_code == 503
        assert page.errors[1].message == "cancelled: required section 'must' failed"

    run_on_mock_clock(run)


def test_without_fail_fast_every_section_finishes() -> None:
    """By default a failed required section does not cut the others short."""

    async def run() -> None:
        sections = [
            Section(name="must", source=Recorder(fail=True), required=True),
            Section(name="slow", source=Recorder("late", delay=0.5)),
        ]
        async with Aggregator(sections, page="aggregator") as agg:
            page = await agg.fetch()
        assert page.sections == {"must": None, "slow": "late"}

    run_on_mock_clock(run)


def test_stream_reports_sections_cut_off_by_shutdown_as_cancelled() -> None:
    """Leaving the aggregator mid-stream gives the listener a CANCELLED entry per section."""

    async def run() -> None:
        sections = [
            Section(name="fast", source=Recorder()),
            Section(name="slow", source=Recorder(delay=10)),
        ]
        seen = []
        async with Aggregator(sections, page="aggregator") as agg:
            stream = agg.stream()
            seen.append(await stream.__anext__())
        seen.extend([r async for r in stream])
        assert [(r.name, r.error.code if r.error else None) for r in seen] == [
            ("fast", None),
            ("slow", ErrorCode.CANCELLED),
        ]

    run_on_mock_clock(run)


# -- edges: what a caller may get wrong, refused at once and clearly ---------


def two_sections() -> list[Section]:
    return [Section(name="a", source=Recorder(1)), Section(name="b", source=Recorder(2))]


async def fetch_page(agg: Aggregator, sections: object) -> list[str]:
    """The names of the sections fetch() answers with."""
    return list((await agg.fetch(sections=sections)).sections)  # type: ignore[arg-type]


async def stream_page(agg: Aggregator, sections: object) -> list[str]:
    """The names of the sections stream() yields, as they come."""
    return [r.name async for r in agg.stream(sections=sections)]  # type: ignore[arg-type]


@pytest.mark.parametrize("call", [fetch_page, stream_page], ids=["fetch", "stream"])
@pytest.mark.parametrize(
    ("sections", "error", "message"),
    [
        ("ab", TypeError, "sections must be a sequence of section names, not a str"),
        (b"ab", TypeError, "sections must be a sequence of section names, not a bytes"),
        (3, TypeError, "sections must be a sequence of section names, not 3"),
        ([], ValueError, "sections must name at least one section"),
        ((), ValueError, "sections must name at least one section"),
        (["a", "a"], ValueError, "sections must not name a section twice: 'a'"),
        (["a", 1], TypeError, r"sections must hold section names \(str\), not 1"),
        ([["a"]], TypeError, r"sections must hold section names \(str\), not \['a'\]"),
    ],
)
async def test_bad_sections_are_refused_before_any_call(
    call: Any, sections: object, error: type[Exception], message: str
) -> None:
    """A str, an empty list, a repeat or a non-name is an error, not a page."""
    sources = [Recorder(1), Recorder(2)]
    parts = [Section(name=n, source=s) for n, s in zip("ab", sources, strict=True)]
    async with Aggregator(parts, page="edges") as agg:
        with pytest.raises(error, match=f"^{message}$"):
            await call(agg, sections)
    assert [s.calls for s in sources] == [0, 0]


async def test_a_str_is_refused_even_when_its_letters_were_asked_for_before() -> None:
    """fetch(sections="ab") is not fetch(sections=["a", "b"]), memoised or not."""
    async with Aggregator(two_sections(), page="edges") as agg:
        assert (await agg.fetch(sections=["a", "b"])).sections == {"a": 1, "b": 2}
        assert (await agg.fetch(sections=["a", "b"])).sections == {"a": 1, "b": 2}
        with pytest.raises(TypeError, match="not a str"):
            await agg.fetch(sections="ab")


async def test_a_requested_subset_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm path pays no validation: names are checked on a memo miss only."""
    sections = [Section(name=n, source=Recorder(n)) for n in ("alpha", "beta", "gamma")]
    async with Aggregator(sections, page="edges") as agg:
        checked: list[object] = []
        check = agg._check_names

        def counting(names: Any, items: Any) -> Any:
            checked.append(names)
            return check(names, items)

        monkeypatch.setattr(agg, "_check_names", counting)
        for _ in range(3):
            await agg.fetch(sections=["gamma", "alpha"])
            await agg.fetch()
    assert checked == [["gamma", "alpha"]]


@pytest.mark.parametrize("call", [fetch_page, stream_page], ids=["fetch", "stream"])
async def test_sections_from_an_iterator_are_read_once(call: Any) -> None:
    """An iterator of names gives its sections, not the empty page of a second read."""
    async with Aggregator(two_sections(), page="edges") as agg:
        for _ in range(2):  # a memo miss, then a hit
            assert await call(agg, iter(["b"])) == ["b"]


async def test_a_long_unknown_name_is_cut_in_the_message() -> None:
    """A 500-character name is echoed in part; the exception still holds it whole."""
    name = "x" * 500
    async with Aggregator(two_sections(), page="edges") as agg:
        with pytest.raises(UnknownSectionError) as info:
            await agg.fetch(sections=["a", name])
    assert info.value.names == [name]
    assert str(info.value) == f"unknown section(s): '{'x' * 63}…"
    assert len(str(info.value)) < 100


async def test_many_unknown_names_are_summed_up() -> None:
    """The message shows the first five names and how many more; .names has them all."""
    names = [f"n{i}" for i in range(40)]
    async with Aggregator(two_sections(), page="edges") as agg:
        with pytest.raises(UnknownSectionError) as info:
            await agg.fetch(sections=names)
    assert info.value.names == names
    assert str(info.value) == "unknown section(s): 'n0', 'n1', 'n2', 'n3', 'n4' and 35 more"


async def test_sections_given_as_the_context_are_refused() -> None:
    """fetch(["a"]) passes the list as the context: the error says how to pass sections."""
    async with Aggregator(two_sections(), page="edges") as agg:
        with pytest.raises(TypeError, match=r"ctx must be a RequestContext or None, not \['a'\]"):
            await agg.fetch(["a"])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="sections are given by keyword"):
            [r async for r in agg.stream(["a"])]  # type: ignore[arg-type]


async def test_entering_twice_raises_at_once_and_plainly() -> None:
    """A nested ``async with`` of the same aggregator is a RuntimeError, not an ExceptionGroup."""
    agg = Aggregator(two_sections(), page="edges")
    with pytest.raises(RuntimeError, match="already running"):
        async with agg, agg:  # the second entry of one aggregator
            pass  # pragma: no cover
    async with agg:  # the failed entry left nothing behind
        assert (await agg.fetch()).status_code == 200


async def test_an_exception_from_the_body_comes_out_as_raised() -> None:
    """What the ``async with`` body raises reaches the caller unwrapped."""
    with pytest.raises(KeyError, match="mine"):
        async with Aggregator(two_sections(), page="edges"):
            raise KeyError("mine")


async def test_a_second_task_cannot_enter_while_the_first_is_entering() -> None:
    """Entry is marked before its first await: two tasks cannot both enter."""

    class SlowToOpen(MemoryCache):
        async def __aenter__(self) -> SlowToOpen:
            await anyio.sleep(0.01)
            return self

    agg = Aggregator(two_sections(), page="edges", cache=SlowToOpen())
    errors: list[BaseException] = []

    async def enter() -> None:
        try:
            async with agg:
                await anyio.sleep(0.02)
        except RuntimeError as error:
            errors.append(error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(enter)
        tg.start_soon(enter)
    assert [str(e) for e in errors] == ["this aggregator is already running"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"section": 3}, TypeError, r"section must be a section name \(str\), not 3"),
        ({"section": "a", "user_id": 42}, TypeError, "user_id must be a str or None, not 42"),
        ({"section": "a", "user_id": ""}, ValueError, "user_id must not be empty"),
        ({"section": "a", "scope": 7}, TypeError, "scope must be a str or None, not 7"),
        ({"section": "y" * 500}, UnknownSectionError, "^unknown section\\(s\\): 'y{63}…$"),
    ],
)
async def test_invalidate_checks_its_arguments_first(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A wrong type or an empty user id is refused before any cache is touched."""
    async with Aggregator(two_sections(), page="edges") as agg:
        with pytest.raises(error, match=message):
            await agg.invalidate(**kwargs)


def test_breaker_state_checks_its_argument() -> None:
    """A section name is a str; an unknown one is cut in the message."""
    agg = Aggregator(two_sections(), page="edges")
    with pytest.raises(TypeError, match="section must be a section name"):
        agg.breaker_state(None)  # type: ignore[arg-type]
    with pytest.raises(UnknownSectionError, match=r"…$"):
        agg.breaker_state("z" * 500)
