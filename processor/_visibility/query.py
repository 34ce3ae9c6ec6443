"""The list query language: a small SQL-like filter over runs, modelled on Temporal's.

    WorkflowType = 'OrderWorkflow' AND ExecutionStatus = 'Running' AND CustomerId = 'c1'
    StartTime > '2026-12-01T00:00:00Z' AND (Amount >= 100 OR Tags = 'vip') ORDER BY StartTime DESC

Predicates: `=`, `!=` (or `<>`), `<`, `<=`, `>`, `>=`, `[NOT] IN (v, ...)`, `[NOT] BETWEEN a AND b`,
`STARTS_WITH 'prefix'`, `IS [NOT] NULL`; joined by AND, OR, NOT and parentheses; then
`ORDER BY field [ASC|DESC], ...` (default: StartTime DESC). Values are 'strings' (or "strings"),
numbers, true/false. Fields are the built-ins below or search attribute names (`backquote` a name
that collides with a keyword). How a value compares follows the field's type:

    datetime      StartTime, CloseTime, datetime attributes: an ISO-8601 string ('2026-12-01' or with a time)
    keyword_list  `Tags = 'vip'` holds when one of the tags is 'vip'
    text          `Notes = 'fragile box'` holds when the text has every word given (any case)
    status        ExecutionStatus: Running, Completed, Failed, Canceled, Terminated, TimedOut, ContinuedAsNew

A run without the attribute matches nothing but `IS NULL` (and `!=` / NOT IN, as in SQL, do not
match it either). Pure: `compile_query` parses once; the projection applies the result to rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from processor.exceptions import ConfigError

__all__ = ["BUILTINS", "Query", "QueryError", "compile_query", "status_name"]


class QueryError(ConfigError):
    """A list query that does not parse, or compares a field with a value of the wrong kind."""


# Built-in fields: name -> (row key, type). A row is the projection's record of one run.
BUILTINS: dict[str, tuple[str, str]] = {
    "WorkflowId": ("workflow_id", "keyword"),
    "RunId": ("run_id", "keyword"),
    "WorkflowType": ("workflow_type", "keyword"),
    "ExecutionStatus": ("status", "status"),
    "StartTime": ("start_ms", "datetime"),
    "CloseTime": ("close_ms", "datetime"),
    "ExecutionDuration": ("duration_ms", "duration"),
    "TaskQueue": ("task_queue", "keyword"),
    "HistoryLength": ("history_length", "int"),
    "ParentWorkflowId": ("parent_workflow_id", "keyword"),
    "Held": ("held", "bool"),
}
_BUILTIN_LOWER = {name.lower(): name for name in BUILTINS}
_STATUSES = {"running", "completed", "failed", "canceled", "terminated", "timedout", "continuedasnew"}


def status_name(status: str) -> str:
    """The engine's status ("timed_out") as queries and the UI spell it ("TimedOut")."""
    return "".join(part.capitalize() for part in status.split("_"))


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)
  | (?P<name>`[^`]+`|[A-Za-z_][A-Za-z0-9_.]*)
""", re.X)
_KEYWORDS = {"and", "or", "not", "in", "between", "order", "by", "asc", "desc", "is", "null", "starts_with",
             "true", "false"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # str, num, op, name, kw, end
    text: str
    pos: int
    value: Any = None


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise QueryError(f"list query: unexpected {text[pos:pos + 10]!r} at character {pos + 1}")
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "str":
            body = raw[1:-1]
            value = body.replace("''", "'") if raw[0] == "'" else body
            out.append(_Tok("str", raw, pos, re.sub(r"\\(.)", r"\1", value)))
        elif kind == "num":
            out.append(_Tok("num", raw, pos, float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif kind == "op":
            out.append(_Tok("op", "!=" if raw == "<>" else raw, pos))
        elif kind == "name":
            if raw.startswith("`"):
                out.append(_Tok("name", raw[1:-1], pos))
            elif raw.lower() in _KEYWORDS:
                out.append(_Tok("kw", raw.lower(), pos))
            else:
                out.append(_Tok("name", raw, pos))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


Row = Mapping[str, Any]
R = TypeVar("R", bound=Mapping[str, Any])
Predicate = Callable[[Row], bool]


@dataclass(frozen=True)
class Query:
    """A compiled query: `matches(row)`, and the order rows are listed in."""

    text: str
    matches: Predicate
    order: list[tuple[str, bool]] = field(default_factory=lambda: [("StartTime", True)])  # (field, descending)

    def sort_key(self, row: Row) -> tuple[Any, ...]:
        return tuple(_value(row, name)[0] for name, _ in self.order)

    def sort(self, given: Iterable[R]) -> list[R]:
        """Rows in the query's order (runs without a value last), ties by workflow id then run."""
        rows = sorted(given, key=lambda r: (r.get("workflow_id", ""), r.get("run_id", "")))
        for name, descending in reversed(self.order):  # stable sorts, last key first
            valued = [(_sortable(_value(r, name)[0]), r) for r in rows]
            missing = [r for v, r in valued if v is None]
            present = [(v, r) for v, r in valued if v is not None]
            present.sort(key=_first, reverse=descending)
            rows = [r for _, r in present] + missing
        return rows


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def _sortable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _value(row: Row, name: str) -> tuple[Any, str | None]:
    """(value, type) of a field in a row; (None, None) when the run has no such value."""
    builtin = BUILTINS.get(name)
    if builtin is not None:
        key, kind = builtin
        value = row.get(key)
        if kind == "bool":
            value = bool(value)
        elif kind == "status" and value is not None:
            value = str(value).replace("_", "")
        return value, kind
    typed = (row.get("search_attributes") or {}).get(name)
    if typed is None or typed.get("value") is None:
        return None, None
    return typed["value"], typed["type"]


def compile_query(text: str | None) -> Query:
    """Parse a list query (None or "" = every run). Raises QueryError saying where and what."""
    text = (text or "").strip()
    parser = _Parser(text, _tokens(text))
    return parser.query()


class _Parser:
    def __init__(self, text: str, toks: list[_Tok]) -> None:
        self.text, self.toks, self.i = text, toks, 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, expected: str) -> QueryError:
        tok = self.peek()
        got = "the end of the query" if tok.kind == "end" else repr(tok.text)
        return QueryError(f"list query: expected {expected} at character {tok.pos + 1}, got {got}")

    def accept_kw(self, *words: str) -> bool:
        tok = self.peek()
        if tok.kind == "kw" and tok.text in words:
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str) -> None:
        if not self.accept_kw(word):
            raise self.error(word.upper())

    def accept_op(self, op: str) -> bool:
        tok = self.peek()
        if tok.kind == "op" and tok.text == op:
            self.i += 1
            return True
        return False

    def query(self) -> Query:
        matches: Predicate = lambda row: True  # noqa: E731 - the empty query
        if self.peek().kind != "end" and not (self.peek().kind == "kw" and self.peek().text == "order"):
            matches = self.disjunction()
        order = [("StartTime", True)]
        if self.accept_kw("order"):
            self.expect_kw("by")
            order = [self.order_item()]
            while self.accept_op(","):
                order.append(self.order_item())
        if self.peek().kind != "end":
            raise self.error("AND, OR, ORDER BY or the end of the query")
        return Query(self.text, matches, order)

    def order_item(self) -> tuple[str, bool]:
        name = self.field_name()
        descending = False
        if self.accept_kw("desc"):
            descending = True
        else:
            self.accept_kw("asc")
        return name, descending

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.accept_kw("or"):
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda row: any(p(row) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.accept_kw("and"):
            parts.append(self.negation())
        if len(parts) == 1:
            return parts[0]
        return lambda row: all(p(row) for p in parts)

    def negation(self) -> Predicate:
        if self.accept_kw("not"):
            inner = self.negation()
            return lambda row: not inner(row)
        if self.accept_op("("):
            inner = self.disjunction()
            if not self.accept_op(")"):
                raise self.error("')'")
            return inner
        return self.predicate()

    def field_name(self) -> str:
        tok = self.peek()
        if tok.kind != "name":
            raise self.error("a field name (a built-in such as WorkflowType, or a search attribute)")
        self.i += 1
        return _BUILTIN_LOWER.get(tok.text.lower(), tok.text)

    def literal(self, name: str) -> Any:
        tok = self.take()
        if tok.kind in ("str", "num"):
            value = tok.value
        elif tok.kind == "kw" and tok.text in ("true", "false"):
            value = tok.text == "true"
        else:
            self.i -= 1
            raise self.error(f"a value for {name} (a 'string', a number, true or false)")
        return _coerce(name, value, tok.pos)

    def predicate(self) -> Predicate:
        name = self.field_name()
        if self.accept_kw("is"):
            negate = self.accept_kw("not")
            self.expect_kw("null")
            return lambda row: (_value(row, name)[0] is None) != negate
        negate = self.accept_kw("not")
        if self.accept_kw("in"):
            if not self.accept_op("("):
                raise self.error("'(' after IN")
            values = [self.literal(name)]
            while self.accept_op(","):
                values.append(self.literal(name))
            if not self.accept_op(")"):
                raise self.error("')' closing IN")
            return _present(name, lambda v, t: any(_equal(v, t, x) for x in values) != negate)
        if self.accept_kw("between"):
            low = self.literal(name)
            self.expect_kw("and")
            high = self.literal(name)
            return _present(name, lambda v, t: (_compare(v, low) in (0, 1) and _compare(v, high) in (-1, 0)) != negate)
        if negate:
            raise self.error("IN or BETWEEN after NOT")
        if self.accept_kw("starts_with"):
            prefix = self.literal(name)
            if not isinstance(prefix, str):
                raise QueryError(f"list query: STARTS_WITH needs a string, for {name}")
            return _present(name, lambda v, t: isinstance(v, str) and v.startswith(prefix))
        tok = self.peek()
        if tok.kind != "op" or tok.text not in ("=", "!=", "<", "<=", ">", ">="):
            raise self.error(f"an operator after {name} (=, !=, <, <=, >, >=, IN, BETWEEN, STARTS_WITH, IS NULL)")
        self.i += 1
        value = self.literal(name)
        op = tok.text
        if op == "=":
            return _present(name, lambda v, t: _equal(v, t, value))
        if op == "!=":
            return _present(name, lambda v, t: not _equal(v, t, value))
        wanted = {"<": (-1,), "<=": (-1, 0), ">": (1,), ">=": (0, 1)}[op]  # 2 (unordered) never matches
        return _present(name, lambda v, t: _compare(v, value) in wanted)


def _present(name: str, test: Callable[[Any, str | None], bool]) -> Predicate:
    def predicate(row: Row) -> bool:
        value, kind = _value(row, name)
        return value is not None and test(value, kind)
    return predicate


def _coerce(name: str, value: Any, pos: int) -> Any:
    """A literal as the field's type wants it, where the field is a built-in (an attribute's type
    is the run's, so it is settled per row in _equal/_compare)."""
    builtin = BUILTINS.get(name)
    kind = builtin[1] if builtin else None
    if kind == "datetime":
        if not isinstance(value, str):
            raise QueryError(f"list query: {name} is a time: write it as '2026-12-01T09:00:00Z'; got {value!r} "
                             f"(character {pos + 1})")
        return _parse_time(name, value, pos)
    if kind is None and isinstance(value, str) and _looks_like_time(value):
        return _Time(value, _parse_time(name, value, pos))
    if kind == "status":
        if not isinstance(value, str) or value.replace("_", "").lower() not in _STATUSES:
            raise QueryError(f"list query: ExecutionStatus is one of Running, Completed, Failed, Canceled, "
                             f"Terminated, TimedOut, ContinuedAsNew; got {value!r} (character {pos + 1})")
        return value.replace("_", "").lower()
    if kind in ("int", "duration") and not isinstance(value, int | float):
        raise QueryError(f"list query: {name} is a number; got {value!r} (character {pos + 1})")
    if kind == "bool" and not isinstance(value, bool):
        raise QueryError(f"list query: {name} is true or false; got {value!r} (character {pos + 1})")
    return value


class _Time(str):
    """A string literal that also reads as a time: compared as a time with a datetime attribute,
    as a string with a keyword."""

    ms: int

    def __new__(cls, text: str, ms: int) -> _Time:
        self = super().__new__(cls, text)
        self.ms = ms
        return self


_TIME_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}([T ][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?")


def _looks_like_time(text: str) -> bool:
    return bool(_TIME_SHAPE.fullmatch(text))


def _parse_time(name: str, text: str, pos: int) -> int:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"list query: {name} needs an ISO-8601 time such as '2026-12-01T09:00:00Z'; got "
                         f"{text!r} (character {pos + 1})") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


def _equal(value: Any, kind: str | None, literal: Any) -> bool:
    if kind == "status":
        return bool(str(value).lower() == literal)
    if kind == "keyword_list":
        return isinstance(literal, str) and literal in value
    if kind == "text":
        if not isinstance(literal, str):
            return False
        words = set(_words(value))
        return all(w in words for w in _words(literal))
    return _compare(value, literal) == 0


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _compare(value: Any, literal: Any) -> int:
    """-1/0/1 of value against literal; values of different kinds are unequal (and unordered: 2)."""
    if isinstance(literal, _Time) and isinstance(value, int | float) and not isinstance(value, bool):
        literal = literal.ms
    elif isinstance(literal, _Time):
        literal = str(literal)
    numeric = (int, float)
    if isinstance(value, bool) or isinstance(literal, bool):
        if not (isinstance(value, bool) and isinstance(literal, bool)):
            return 2
    elif isinstance(value, numeric) != isinstance(literal, numeric):
        return 2
    elif not isinstance(value, numeric) and type(value) is not type(literal) and not (
            isinstance(value, str) and isinstance(literal, str)):
        return 2
    if value == literal:
        return 0
    try:
        return -1 if value < literal else 1
    except TypeError:
        return 2
