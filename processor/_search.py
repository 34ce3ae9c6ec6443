"""Search attributes and memo: the typed values that make a workflow findable, in one place.

A search attribute is a named, typed value the visibility projection indexes and the list query
language filters and sorts on (`CustomerId = 'c1' AND Amount > 100`). Seven types, as Temporal's:

    keyword       str, matched whole (ids, states, emails)           Python: str
    text          str, matched by words (descriptions)               Python: Text("...")
    int           64-bit integer                                     Python: int
    float         double                                             Python: float
    bool                                                             Python: bool
    datetime      instant, epoch milliseconds on the wire            Python: datetime with a tzinfo
    keyword_list  list of keywords (tags); `Tags = 'a'` matches one  Python: list[str]

On the wire (docs/protocol.md#search-attributes) an attribute set is an Avro
`map<wf.common.v1.SearchAttributeValue{type, value}>`; a `null` value in an upsert removes the
attribute. A memo is a `map<wf.common.v1.Payload>`: shown, never indexed.

Both are validated where a user gives them (a one-line ConfigError naming what to fix) and again by
the processor for records produced by other languages (refused with the same message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

from processor._payload import Payload, from_payload, to_payload
from processor.exceptions import ConfigError

__all__ = [
    "RESERVED",
    "TYPES",
    "SearchAttributeValue",
    "Text",
    "apply_upsert",
    "decode_attributes",
    "decode_memo",
    "encode_attributes",
    "encode_memo",
    "wire_problem",
]

KEYWORD, TEXT, INT, FLOAT, BOOL, DATETIME, KEYWORD_LIST = (
    "keyword", "text", "int", "float", "bool", "datetime", "keyword_list")
TYPES = (KEYWORD, TEXT, INT, FLOAT, BOOL, DATETIME, KEYWORD_LIST)

# Names the visibility projection defines itself (the list query language's built-in fields).
RESERVED = frozenset({"WorkflowId", "RunId", "WorkflowType", "ExecutionStatus", "StartTime", "CloseTime",
                      "ExecutionDuration", "TaskQueue", "HistoryLength", "ParentWorkflowId", "Held"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_ATTRIBUTES = 100
MAX_VALUE_BYTES = 2_048  # a keyword, one text or one list item; Temporal's per-value limit
MAX_TOTAL_BYTES = 40_960  # all of one workflow's attributes together
_INT64 = (-(2**63), 2**63 - 1)


class Text(str):
    """A `text` search attribute value (matched by words), rather than a `keyword` (matched whole)."""

    __slots__ = ()


class SearchAttributeValue(TypedDict):
    type: str
    value: str | int | float | bool | list[str] | None


def encode_attributes(attributes: Mapping[str, Any] | None, *, upsert: bool = False) -> dict[str, SearchAttributeValue]:
    """Python values -> the wire map, typed by value (see the module doc). `upsert`: None removes
    an attribute. Raises ConfigError naming the attribute and the fix."""
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise ConfigError(f"search_attributes must be a dict of name -> value; got {type(attributes).__name__}")
    out: dict[str, SearchAttributeValue] = {}
    for name, value in attributes.items():
        _check_name(name)
        out[name] = _encode_value(name, value, upsert)
    problem = wire_problem(out, upsert=upsert)
    if problem is not None:
        raise ConfigError(problem)
    return out


def _check_name(name: object) -> None:
    problem = _name_problem(name)
    if problem is not None:
        raise ConfigError(problem)


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return f"search attribute name {name!r} must be 1-64 ASCII letters, digits or '_', not starting with a digit"
    if name in RESERVED:
        return f"search attribute name {name!r} is reserved (built in: {', '.join(sorted(RESERVED))})"
    return None


def _encode_value(name: str, value: object, upsert: bool) -> SearchAttributeValue:
    if value is None:
        if upsert:
            return {"type": KEYWORD, "value": None}
        raise ConfigError(f"search attribute {name!r} is None: give it a value (None only removes one in an upsert)")
    if isinstance(value, bool):
        return {"type": BOOL, "value": value}
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ConfigError(f"search attribute {name!r} = {value} does not fit in 64 bits")
        return {"type": INT, "value": value}
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"search attribute {name!r} = {value}: NaN and infinities cannot be searched")
        return {"type": FLOAT, "value": value}
    if isinstance(value, Text):
        return {"type": TEXT, "value": str(value)}
    if isinstance(value, str):
        return {"type": KEYWORD, "value": value}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(f"search attribute {name!r} is a naive datetime: give it a tzinfo (e.g. "
                              "datetime.now(UTC))")
        return {"type": DATETIME, "value": round(value.timestamp() * 1000)}
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return {"type": KEYWORD_LIST, "value": list(value)}
    raise ConfigError(f"search attribute {name!r} has a value of type {type(value).__name__}: use str, Text, int, "
                      "float, bool, an aware datetime or a list of str")


def wire_problem(attributes: object, *, upsert: bool = False) -> str | None:
    """What is wrong with a wire attribute map (from any language), or None."""
    if not isinstance(attributes, dict):
        return "search_attributes must be a map"
    if len(attributes) > MAX_ATTRIBUTES:
        return f"{len(attributes)} search attributes; at most {MAX_ATTRIBUTES}"
    total = 0
    for name, typed in attributes.items():
        if (problem := _name_problem(name)) is not None:
            return problem
        kind, value = typed.get("type"), typed.get("value")
        if kind not in TYPES:
            return f"search attribute {name!r} has type {kind!r}; one of {', '.join(TYPES)}"
        if value is None:
            if upsert:
                continue
            return f"search attribute {name!r} has no value"
        size = _value_problem(name, kind, value)
        if isinstance(size, str):
            return size
        total += size + len(name)
    if total > MAX_TOTAL_BYTES:
        return f"search attributes take {total} bytes; at most {MAX_TOTAL_BYTES}"
    return None


def _value_problem(name: str, kind: str, value: object) -> int | str:
    """The value's size in bytes, or what is wrong with it."""
    if kind in (KEYWORD, TEXT):
        if not isinstance(value, str):
            return f"search attribute {name!r} of type {kind} needs a string value; got {type(value).__name__}"
        size = len(value.encode())
        limit = MAX_VALUE_BYTES if kind == KEYWORD else MAX_TOTAL_BYTES
        return size if size <= limit else f"search attribute {name!r} is {size} bytes; a {kind} holds at most {limit}"
    if kind in (INT, DATETIME):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return 8 if ok else f"search attribute {name!r} of type {kind} needs a long value; got {type(value).__name__}"
    if kind == FLOAT:
        ok = isinstance(value, float | int) and not isinstance(value, bool)
        return 8 if ok else f"search attribute {name!r} of type float needs a double; got {type(value).__name__}"
    if kind == BOOL:
        return 1 if isinstance(value, bool) else f"search attribute {name!r} of type bool needs a boolean"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"search attribute {name!r} of type keyword_list needs an array of strings"
    sizes = [len(v.encode()) for v in value]
    if any(s > MAX_VALUE_BYTES for s in sizes):
        return f"search attribute {name!r} has an item over {MAX_VALUE_BYTES} bytes"
    return sum(sizes)


def apply_upsert(current: Mapping[str, SearchAttributeValue],
                 upsert: Mapping[str, SearchAttributeValue]) -> dict[str, SearchAttributeValue]:
    """The attributes after an upsert: set or replace each one given, remove those given as null."""
    out = dict(current)
    for name, typed in upsert.items():
        if typed.get("value") is None:
            out.pop(name, None)
        else:
            out[name] = typed
    return out


def decode_attributes(attributes: Mapping[str, SearchAttributeValue] | None) -> dict[str, Any]:
    """The wire map -> Python values (datetimes aware, in UTC; text as Text)."""
    out: dict[str, Any] = {}
    for name, typed in (attributes or {}).items():
        kind, value = typed["type"], typed["value"]
        if value is None:
            continue
        if kind == DATETIME:
            out[name] = datetime.fromtimestamp(int(value) / 1000, UTC)  # type: ignore[arg-type]
        elif kind == TEXT:
            out[name] = Text(value)
        elif kind == FLOAT:
            out[name] = float(value)  # type: ignore[arg-type]
        else:
            out[name] = value
    return out


def encode_memo(memo: Mapping[str, Any] | None) -> dict[str, Payload]:
    if memo is None:
        return {}
    if not isinstance(memo, Mapping) or not all(isinstance(k, str) and k for k in memo):
        raise ConfigError("memo must be a dict of non-empty string keys -> values")
    return {name: to_payload(value) for name, value in memo.items()}


def decode_memo(memo: Mapping[str, Payload] | None) -> dict[str, Any]:
    return {name: from_payload(payload, Any) for name, payload in (memo or {}).items()}
