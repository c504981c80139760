"""Serializers: the types a Python service meets, written the same by json and orjson."""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import attrs
import pytest
from bson import DatetimeMS, Decimal128, ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpage import (
    Aggregator,
    CachePolicy,
    ErrorCode,
    JsonSerializer,
    OrjsonSerializer,
    RequestContext,
    Section,
)
from batchpage._serializer import decimal128_text
from batchpage.extend import Serializer
from helpers import Recorder

pytestmark = pytest.mark.anyio

PARIS_WINTER = timezone(timedelta(hours=1))


@pytest.fixture(params=[JsonSerializer, OrjsonSerializer], ids=["json", "orjson"])
def serializer(request: pytest.FixtureRequest) -> Serializer:
    factory: Callable[[], Serializer] = request.param
    return factory()


def wire(serializer: Serializer, value: Any) -> Any:
    """What a client parses from the bytes, decimals kept exact."""
    return json.loads(serializer.dumps(value), parse_float=Decimal)


class Colour(enum.Enum):
    RED = "red"
    LAUNCH = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
    PAIR = (1, Decimal("2.50"))


class Size(enum.IntEnum):
    SMALL = 1


class Kind(enum.StrEnum):
    SHOE = "shoe"


@dataclasses.dataclass
class Price:
    amount: Decimal
    currency: str = "EUR"
    CURRENCIES: ClassVar[tuple[str, ...]] = ("EUR",)


@dataclasses.dataclass(frozen=True, slots=True)
class Product:
    id: uuid.UUID
    price: Price
    created_at: datetime
    _rank: int = 0
    tags: frozenset[str] = frozenset()
    seen: int = dataclasses.field(default=0, init=False)


@attrs.frozen
class Store:
    name: str
    opened: date
    _secret_rank: int = 3


class Unknown:
    pass


class NoOffset(tzinfo):
    """A zone that does not know its offset: Python calls such datetimes naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


# -- each type ----------------------------------------------------------------


def test_aware_datetime_is_utc_with_z(serializer: Serializer) -> None:
    """A datetime with an offset is converted to UTC and ends in ``Z``."""
    value = datetime(2026, 11, 23, 22, 0, tzinfo=PARIS_WINTER)
    assert serializer.dumps(value) == b'"2026-11-23T21:00:00Z"'


def test_datetime_in_any_zone_is_utc(serializer: Serializer) -> None:
    """Zones with a zero offset, offsets in seconds, and named zones all end in UTC."""
    london_winter = datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("Europe/London"))
    paris_summer = datetime(2026, 7, 5, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    odd = datetime(2026, 1, 5, 9, 0, tzinfo=timezone(timedelta(minutes=5, seconds=30)))
    assert wire(serializer, [london_winter, paris_summer, odd]) == [
        "2026-01-05T09:00:00Z",
        "2026-07-05T07:00:00Z",
        "2026-01-05T08:54:30Z",
    ]


def test_datetime_keeps_its_microseconds(serializer: Serializer) -> None:
    """Microseconds are written when there are any, as ``isoformat`` does."""
    value = datetime(2026, 11, 23, 21, 0, 0, 123000, tzinfo=UTC)
    assert serializer.dumps(value) == b'"2026-11-23T21:00:00.123000Z"'


def test_naive_datetime_is_read_as_utc(serializer: Serializer) -> None:
    """A naive datetime is UTC, as pymongo returns them."""
    assert serializer.dumps(datetime(2026, 1, 2, 3, 4, 5)) == b'"2026-01-02T03:04:05Z"'
    no_offset = datetime(2026, 1, 2, 3, 4, 5, tzinfo=NoOffset())
    assert serializer.dumps(no_offset) == b'"2026-01-02T03:04:05Z"'


def test_date_is_iso(serializer: Serializer) -> None:
    """A date is ``YYYY-MM-DD``."""
    assert serializer.dumps(date(2026, 11, 23)) == b'"2026-11-23"'


def test_naive_time_is_a_wall_clock_time(serializer: Serializer) -> None:
    """A naive time of day names no instant: written as it is, without a zone."""
    assert serializer.dumps(time(9, 30)) == b'"09:30:00"'
    assert serializer.dumps(time(9, 30, 0, 5)) == b'"09:30:00.000005"'


def test_aware_time_is_utc_with_z(serializer: Serializer) -> None:
    """A time with an offset is moved to UTC, wrapping past midnight."""
    assert serializer.dumps(time(0, 30, tzinfo=PARIS_WINTER)) == b'"23:30:00Z"'


@pytest.mark.parametrize("text", ["19.90", "0.10", "-0.000", "1E+2", "12345678901234567890.123"])
def test_decimal_is_a_number_with_its_exact_text(serializer: Serializer, text: str) -> None:
    """A Decimal is written as a JSON number, digit for digit: no float rounding."""
    assert serializer.dumps(Decimal(text)) == text.encode()
    assert serializer.dumps({"price": [Decimal(text)]}) == b'{"price":[' + text.encode() + b"]}"


@pytest.mark.parametrize("text", ["NaN", "-Infinity", "Infinity", "sNaN"])
def test_non_finite_decimal_is_an_error(serializer: Serializer, text: str) -> None:
    """JSON has no NaN or Infinity: such a decimal is refused, not turned into null."""
    with pytest.raises(ValueError, match="JSON has no NaN or Infinity"):
        serializer.dumps({"price": Decimal(text)})


def test_a_string_with_nul_characters_is_left_alone(serializer: Serializer) -> None:
    """Strings are never mistaken for a decimal's placeholder."""
    value = ["\x00", "\x001.5", "\\u00001.5", Decimal("1.5")]
    assert json.loads(serializer.dumps(value)) == ["\x00", "\x001.5", "\\u00001.5", 1.5]


def test_uuid_is_its_canonical_string(serializer: Serializer) -> None:
    """A UUID is its hyphenated lowercase string."""
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert serializer.dumps(value) == b'"12345678-1234-5678-1234-567812345678"'


def test_enum_member_is_its_value_encoded_in_turn(serializer: Serializer) -> None:
    """An enum member is its value, itself encoded by the same rules."""
    value = [Colour.RED, Colour.LAUNCH, Colour.PAIR, Size.SMALL, Kind.SHOE]
    assert wire(serializer, value) == [
        "red",
        "2026-11-23T21:00:00Z",
        [1, Decimal("2.50")],
        1,
        "shoe",
    ]


def test_dataclass_is_an_object_of_its_fields(serializer: Serializer) -> None:
    """A dataclass is its fields (leading underscore and ``init=False`` ones too), recursively."""
    product = Product(
        id=uuid.UUID(int=1),
        price=Price(Decimal("19.90")),
        created_at=datetime(2026, 1, 1),
        tags=frozenset({"new"}),
    )
    assert wire(serializer, product) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "price": {"amount": Decimal("19.90"), "currency": "EUR"},
        "created_at": "2026-01-01T00:00:00Z",
        "_rank": 0,
        "tags": ["new"],
        "seen": 0,
    }


def test_dataclass_attributes_outside_its_fields_are_not_written(serializer: Serializer) -> None:
    """Only declared fields are written: not class variables, not attributes set later."""
    price = Price(Decimal("1"))
    price.note = "internal"  # type: ignore[attr-defined]
    assert wire(serializer, price) == {"amount": 1, "currency": "EUR"}


def test_attrs_instance_is_an_object_of_its_fields(serializer: Serializer) -> None:
    """An attrs instance is its attributes, by their names."""
    value = Store("Lyon", date(2020, 5, 1))
    assert wire(serializer, value) == {"name": "Lyon", "opened": "2020-05-01", "_secret_rank": 3}


def test_sets_and_tuples_are_arrays(serializer: Serializer) -> None:
    """Sets, frozensets and tuples are JSON arrays."""
    assert wire(serializer, {"s": {1}, "f": frozenset({"a"}), "t": (1, "b")}) == {
        "s": [1],
        "f": ["a"],
        "t": [1, "b"],
    }


def test_bson_types(serializer: Serializer) -> None:
    """ObjectId is its hex string, Decimal128 a decimal, DatetimeMS its datetime."""
    value = {
        "_id": ObjectId("65a1b2c3d4e5f60718293a4b"),
        "price": Decimal128("19.90"),
        "at": DatetimeMS(1_700_000_000_123),
    }
    assert serializer.dumps(value) == (
        b'{"_id":"65a1b2c3d4e5f60718293a4b","price":19.90,"at":"2023-11-14T22:13:20.123000Z"}'
    )


decimal128s = st.builds(
    lambda coefficient, exponent: Decimal128(Decimal(f"{coefficient}E{exponent}")),
    st.integers(min_value=-(10**34) + 1, max_value=10**34 - 1),
    st.integers(min_value=-6176, max_value=6111),
)


@settings(max_examples=300)
@given(
    st.binary(min_size=16, max_size=16)
    | decimal128s.map(lambda value: value.bid)
    | st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "-0", "0E-6176"]).map(
        lambda text: Decimal128(text).bid
    )
)
def test_decimal128_text_is_bsons_own(bid: bytes) -> None:
    """Every Decimal128 bit pattern reads as bson's ``to_decimal()`` reads it."""
    value = Decimal128.from_bid(bid)
    expected = value.to_decimal()
    if expected.is_finite():
        assert decimal128_text(value) == str(expected)
    else:
        with pytest.raises(ValueError, match="JSON has no NaN or Infinity"):
            decimal128_text(value)


def test_bson_decimal128_nan_is_an_error(serializer: Serializer) -> None:
    """Decimal128's NaN is refused like Decimal's."""
    with pytest.raises(ValueError, match="NaN"):
        serializer.dumps(Decimal128("NaN"))


def test_unsupported_type_names_the_type(serializer: Serializer) -> None:
    """A type no rule knows is a TypeError naming it, short and in full."""
    with pytest.raises(TypeError) as info:
        serializer.dumps({"a": [Unknown()]})
    assert str(info.value) == f"cannot encode an Unknown ({Unknown.__module__}.Unknown) value"
    with pytest.raises(TypeError, match=r"^cannot encode a bytes value$"):
        serializer.dumps(b"raw")


def test_plain_values_are_written_as_json_dumps_writes_them() -> None:
    """Without special types, JsonSerializer writes what ``json.dumps`` writes, compact."""
    value = {"a": [1, 2.5, "é", None, True], "b": {"c": "\n"}}
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert JsonSerializer().dumps(value) == expected


plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(plain_json)
def test_any_plain_value_is_written_as_json_dumps_writes_it(value: Any) -> None:
    """The encoder made once writes, for every plain value, what ``json.dumps`` writes."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert JsonSerializer().dumps(value) == expected


def test_a_value_that_contains_itself_is_an_encoding_error() -> None:
    """A circular value fails to encode (an exception, never a hang or a crash)."""
    circular: list[Any] = [1]
    circular.append(circular)
    with pytest.raises((ValueError, RecursionError)):
        JsonSerializer().dumps({"a": circular})
    assert JsonSerializer().dumps([1, [2]]) == b"[1,[2]]"  # and the encoder goes on


async def test_a_circular_value_is_a_serialization_error_in_a_page() -> None:
    """In a page, such a section is SERIALIZATION_ERROR; the others are served."""
    circular: dict[str, Any] = {}
    circular["self"] = circular

    async def loop(ctx: RequestContext) -> Any:
        return circular

    async def fine(ctx: RequestContext) -> Any:
        return [1]

    sections = [Section(name="loop", source=loop), Section(name="fine", source=fine)]
    async with Aggregator(sections, page="serializer") as agg:
        page = await agg.fetch()
    assert [(e.section, e.code) for e in page.errors] == [("loop", ErrorCode.SERIALIZATION_ERROR)]
    assert page.sections == {"loop": None, "fine": [1]}


def test_users_default_is_asked_first() -> None:
    """A default can override a built-in encoding, and leaves the rest to them by TypeError."""

    def epoch_seconds(value: Any) -> Any:
        if isinstance(value, datetime):
            return int(value.timestamp())
        if isinstance(value, Unknown):
            return "unknown"
        raise TypeError(value)

    value = [datetime(1970, 1, 1, 0, 1, tzinfo=UTC), Decimal("1.10"), Unknown()]
    for serializer in (
        JsonSerializer(default=epoch_seconds),
        OrjsonSerializer(default=epoch_seconds),
    ):
        assert serializer.dumps(value) == b'[60,1.10,"unknown"]'


def test_core_does_not_import_bson_to_encode() -> None:
    """Encoding every non-bson type leaves bson (and pymongo) unimported."""
    code = (
        "import sys, datetime, decimal, uuid, batchpage\n"
        "v = [datetime.datetime(2026, 1, 1), decimal.Decimal('1.5'), uuid.uuid4(), {1}]\n"
        "batchpage.JsonSerializer().dumps(v); batchpage.OrjsonSerializer().dumps(v)\n"
        "print([m for m in ('bson', 'pymongo') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- orjson -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        2**70,
        -(2**64),
        {1: Decimal("1.0"), 2: "b"},
        {None: 1, True: 2, 1.5: 3},
        [[[[[[[[[[1]]]]]]]]]] * 30,
    ],
    ids=["big-int", "big-negative-int", "int-keys", "scalar-keys", "deep"],
)
def test_orjson_writes_what_it_refuses_through_json(value: Any) -> None:
    """Big ints, non-string keys and deep nesting: orjson hands them to json, same bytes."""
    assert OrjsonSerializer().dumps(value) == JsonSerializer().dumps(value)


def test_orjson_writes_deeper_nesting_than_orjson_allows() -> None:
    """Nesting past orjson's 255 levels is written (by json) all the same."""
    value: Any = 1
    for _ in range(300):
        value = [value]
    assert OrjsonSerializer().dumps(value) == JsonSerializer().dumps(value)


def test_orjson_reads_numbers_beyond_a_double() -> None:
    """A decimal's text beyond a double's range reads back, as json reads it."""
    data = OrjsonSerializer().dumps([Decimal("1E+400")])
    assert data == b"[1E+400]"
    assert OrjsonSerializer().loads(data) == JsonSerializer().loads(data) == [float("inf")]


def test_orjson_and_json_differ_on_nan_floats() -> None:
    """The documented difference: orjson writes a NaN float as null, json refuses it."""
    assert OrjsonSerializer().dumps([float("nan")]) == b"[null]"
    with pytest.raises(ValueError, match="Out of range float"):
        JsonSerializer().dumps([float("nan")])


def test_orjson_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without orjson installed, the error says which extra to install."""
    monkeypatch.setitem(sys.modules, "orjson", None)
    with pytest.raises(ModuleNotFoundError, match=r"batchpage\[orjson\]"):
        OrjsonSerializer()


def test_orjson_serializer_is_a_serializer() -> None:
    """OrjsonSerializer meets the Serializer protocol."""
    assert isinstance(OrjsonSerializer(), Serializer)


# -- json and orjson agree ----------------------------------------------------

offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
aware: st.SearchStrategy[tzinfo] = st.just(UTC) | offsets
zones: st.SearchStrategy[tzinfo | None] = st.none() | aware
# Away from datetime's ends, where moving to UTC would overflow (both raise then).
moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)) | (
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=aware)
)
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    moments,
    st.dates(),
    st.times(timezones=zones),
    finite_decimals,
    st.uuids(),
    st.sampled_from([*Colour, *Size, *Kind]),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    decimal128s,
    st.integers(min_value=0, max_value=253_402_300_799_999).map(DatetimeMS),
    st.builds(Price, finite_decimals, st.text(max_size=3)),
    st.builds(Store, st.text(), st.dates(), st.integers()),
    st.frozensets(st.integers() | st.text(max_size=4), max_size=4),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=5), children, max_size=4),
        st.builds(
            Product,
            st.uuids(),
            st.builds(Price, finite_decimals),
            moments,
            st.integers(),
            st.frozensets(st.text(max_size=3), max_size=3),
        ),
    ),
    max_leaves=12,
)


def outcome(serializer: Serializer, value: Any) -> Any:
    """The parsed JSON (decimals exact), or the type of the error."""
    try:
        return ("ok", wire(serializer, value))
    except Exception as exc:
        return ("error", type(exc))


@settings(max_examples=200, deadline=None)
@given(values)
def test_orjson_and_json_write_the_same_json(value: Any) -> None:
    """For every value of these types, both serializers give the client the same JSON."""
    ours = outcome(JsonSerializer(), value)
    assert ours[0] == "ok"
    assert outcome(OrjsonSerializer(), value) == ours


@settings(max_examples=100, deadline=None)
@given(values)
def test_orjson_and_json_read_the_same_values(value: Any) -> None:
    """Bytes written by either read back to the same Python value through both."""
    data = JsonSerializer().dumps(value)
    decoded = JsonSerializer().loads(data)
    if not has_big_int(decoded):  # orjson reads ints beyond 64 bits as floats (documented)
        assert OrjsonSerializer().loads(data) == decoded


def has_big_int(value: Any) -> bool:
    return any(isinstance(v, int) and not -(2**63) <= v < 2**64 for v in _walk(value))


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, list):
        for v in value:
            yield from _walk(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)


# -- through a page -------------------------------------------------------------


@pytest.mark.parametrize("make", [JsonSerializer, OrjsonSerializer], ids=["json", "orjson"])
async def test_a_page_of_real_data_types(make: Callable[[], Serializer]) -> None:
    """A source returning datetimes, decimals, ids, enums and classes gives a plain JSON page."""
    document = {
        "_id": ObjectId("65a1b2c3d4e5f60718293a4b"),
        "price": Decimal128("19.90"),
        "discount": Decimal("0.15"),
        "sku": uuid.UUID(int=42),
        "colour": Colour.RED,
        "createdAt": datetime(2026, 11, 23, 22, 0, tzinfo=PARIS_WINTER),
        "product": Price(Decimal("5.00")),
        "store": Store("Lyon", date(2020, 5, 1)),
    }
    sections = [
        Section(name="products", source=Recorder([document]), cache=CachePolicy()),
        Section(name="plain", source=Recorder({"x": 1})),
    ]
    async with Aggregator(sections, page="serializer", serializer=make()) as agg:
        cold = (await agg.fetch()).to_json()
        warm = await agg.fetch()
    assert warm.to_dict()["metadata"]["cache"]["products"] == "HIT"
    assert warm.to_json().count(b"19.90") == 1
    page = json.loads(cold, parse_float=Decimal)
    assert page["errors"] == []
    assert page["sections"]["products"] == [
        {
            "_id": "65a1b2c3d4e5f60718293a4b",
            "price": Decimal("19.90"),
            "discount": Decimal("0.15"),
            "sku": "00000000-0000-0000-0000-00000000002a",
            "colour": "red",
            "createdAt": "2026-11-23T21:00:00Z",
            "product": {"amount": Decimal("5.00"), "currency": "EUR"},
            "store": {"name": "Lyon", "opened": "2020-05-01", "_secret_rank": 3},
        }
    ]
    assert json.loads(warm.to_json(), parse_float=Decimal)["sections"] == page["sections"]


@pytest.mark.parametrize("make", [JsonSerializer, OrjsonSerializer], ids=["json", "orjson"])
async def test_unsupported_type_is_logged_with_its_name_and_section(
    make: Callable[[], Serializer], caplog: pytest.LogCaptureFixture
) -> None:
    """The log names the section and the type; the client gets a safe SERIALIZATION_ERROR."""
    caplog.set_level(logging.ERROR, "batchpage")
    sections = [
        Section(name="stores", source=Recorder([{"a": Unknown()}])),
        Section(name="plain", source=Recorder(1)),
    ]
    async with Aggregator(sections, page="serializer", serializer=make()) as agg:
        page = await agg.fetch()
    (error,) = page.errors
    assert (error.section, error.code) == ("stores", ErrorCode.SERIALIZATION_ERROR)
    assert error.message == "value is not serializable"
    assert page.sections == {"stores": None, "plain": 1}
    assert f"section 'stores': cannot encode an Unknown ({Unknown.__module__}.Unknown) value" in (
        caplog.text
    )


def test_subclasses_of_the_known_types_encode_like_them() -> None:
    """A subclass of datetime, date, time, Decimal, UUID, set or float encodes as its base."""
    import datetime as dt
    import uuid
    from decimal import Decimal as D

    from batchpage import JsonSerializer

    class When(dt.datetime):
        pass

    class Day(dt.date):
        pass

    class Hour(dt.time):
        pass

    class Money(D):
        pass

    class Id(uuid.UUID):
        pass

    class Tags(frozenset[str]):
        pass

    class Ratio(float):
        pass

    value = {
        "when": When(2026, 11, 24, 8, 0, tzinfo=dt.UTC),
        "day": Day(2026, 11, 24),
        "hour": Hour(9, 30),
        "money": Money("19.90"),
        "id": Id("12345678-1234-5678-1234-567812345678"),
        "tags": Tags({"a"}),
        "ratio": Ratio(0.5),
    }
    encoded = JsonSerializer().dumps(value)
    assert encoded == (
        b'{"when":"2026-11-24T08:00:00Z","day":"2026-11-24","hour":"09:30:00",'
        b'"money":19.90,"id":"12345678-1234-5678-1234-567812345678","tags":["a"],"ratio":0.5}'
    )
