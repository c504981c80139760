"""What ``/openapi.json`` says of each route: its query parameters and its answers.

The handlers take the raw request (``batchpage.contrib`` parses and validates
the query itself, so that both apps answer alike), so FastAPI can infer none
of this: it is written here, after DESIGN.md's contract and ``docs/http.md``.
Each constant is the keyword arguments of one route's ``app.get``;
``tests/examples/test_hostile_http.py`` runs schemathesis against the result.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import Response

from batchpage.contrib.http import JSON, NDJSON
from examples.homepage.queries import MAX_LIMIT
from examples.homepage.sources import DEFAULT_LIMIT, SECTION_NAMES
from examples.service.request import MAX_USER_ID_LENGTH

Schema = dict[str, Any]


def _query(name: str, description: str, schema: Schema, **extra: Any) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema, **extra}


LIMIT: Final = _query(
    "limit",
    "items per section; written plainly (no sign, no leading zero)",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
SECTIONS: Final = _query(
    "sections",
    "the sections to answer, comma-separated, each once; all when missing",
    {"type": "array", "items": {"enum": list(SECTION_NAMES)}, "minItems": 1, "uniqueItems": True},
    style="form",
    explode=False,
)
USER_ID: Final[Schema] = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_.@-]*$",
    "minLength": 1,
    "maxLength": MAX_USER_ID_LENGTH,
}
SESSION_COOKIE: Final = {
    "name": "batchpage_session",
    "in": "cookie",
    "description": "the signed session of POST /session; anonymous without it",
    "schema": {"type": "string"},
}
IF_NONE_MATCH: Final = {
    "name": "If-None-Match",
    "in": "header",
    "description": "an ETag of this page: 304 when it still matches",
    "schema": {"type": "string"},
}


def _flag(name: str) -> Schema:
    return _query(name, "give exactly one of featured=true and flashSale=true", {"enum": ["true"]})


def _content(media_type: str, schema: Schema) -> Schema:
    return {media_type: {"schema": schema}}


def _object(*required: str, **properties: Schema) -> Schema:
    return {"type": "object", "required": list(required), "properties": properties}


_STRING: Final[Schema] = {"type": "string"}
ERROR: Final = _object(
    "error",
    error={
        **_object("field", "message", field=_STRING, message=_STRING),
        "additionalProperties": False,
    },
) | {"additionalProperties": False}
PAGE: Final = _object(
    "sections",
    "errors",
    "metadata",
    sections={"type": "object"},
    errors={"type": "array"},
    metadata={"type": "object"},
)
LEGACY_DATA: Final = _object("data", data={"type": "array"})
LEGACY_UNAVAILABLE: Final = _object("error", error=_object("section", "code", "message"))
ROLLOUT_ANSWER: Final = _object(
    "userId",
    "useBatch",
    "percentage",
    "enabled",
    userId={"type": ["string", "null"]},
    useBatch={"type": "boolean"},
    percentage={"type": "number"},
    enabled={"type": "boolean"},
)

_BAD_INPUT: Final = {
    400: {"description": "bad input; the error names the field", "content": _content(JSON, ERROR)}
}


def _route(parameters: list[Schema], responses: dict[int, Schema]) -> dict[str, Any]:
    # response_class=Response: no default JSON 200, only what ``responses`` lists.
    return {
        "response_class": Response,
        "responses": responses,
        "openapi_extra": {"parameters": parameters} if parameters else {},
    }


HOMEPAGE: Final = _route(
    [LIMIT, SECTIONS, SESSION_COOKIE, IF_NONE_MATCH],
    {
        200: {"description": "the page", "content": _content(JSON, PAGE)},
        304: {"description": "the page has the ETag of If-None-Match"},
        **_BAD_INPUT,
        503: {"description": "no section could be answered", "content": _content(JSON, PAGE)},
    },
)
STREAM: Final = _route(
    [LIMIT, SECTIONS, SESSION_COOKIE],
    {
        200: {
            "description": "one JSON line per section as it completes, then the page's status",
            "content": _content(NDJSON, _STRING),
        },
        **_BAD_INPUT,
    },
)
_LEGACY_ANSWERS: Final = {
    200: {"description": "the section's items", "content": _content(JSON, LEGACY_DATA)},
    **_BAD_INPUT,
    503: {"description": "the query failed", "content": _content(JSON, LEGACY_UNAVAILABLE)},
}
LEGACY: Final = _route([LIMIT, SESSION_COOKIE], _LEGACY_ANSWERS)
OFFERS: Final = _route(
    [_flag("featured"), _flag("flashSale"), LIMIT, SESSION_COOKIE], _LEGACY_ANSWERS
)
ROLLOUT: Final = _route(
    [SESSION_COOKIE],
    {200: {"description": "the path this user takes", "content": _content(JSON, ROLLOUT_ANSWER)}},
)
SESSION_ANSWER: Final = _object("userId", userId={"type": ["string", "null"]})
SESSION: Final = _route(
    [SESSION_COOKIE],
    {200: {"description": "who is signed in", "content": _content(JSON, SESSION_ANSWER)}},
)
SIGN_IN: Final = _route(
    [],
    {
        200: {"description": "signed in", "content": _content(JSON, SESSION_ANSWER)},
        **_BAD_INPUT,
    },
) | {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": _content(
                JSON, _object("userId", userId=USER_ID) | {"additionalProperties": False}
            ),
        }
    }
}

FAULTS_ANSWER: Final = _object(
    "faults",
    "breakers",
    faults={"type": "object", "additionalProperties": _STRING},
    breakers={"type": "object", "additionalProperties": {"enum": ["closed", "open", "half-open"]}},
)
_FAULTS_200: Final = {
    200: {"description": "the switch's faults now", "content": _content(JSON, FAULTS_ANSWER)}
}
DEMO_FAULTS: Final = _route([], _FAULTS_200)
SET_DEMO_FAULT: Final = _route(
    [],
    {
        **_FAULTS_200,
        **_BAD_INPUT,
        415: {"description": "the body is not JSON", "content": _content(JSON, ERROR)},
    },
) | {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": _content(
                JSON,
                _object(
                    "section",
                    "fault",
                    section={"enum": list(SECTION_NAMES)},
                    fault={"type": "string", "pattern": r"^(error|hang|none|delay:[0-9.]+m?s)$"},
                )
                | {"additionalProperties": False},
            ),
        }
    }
}
