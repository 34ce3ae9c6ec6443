from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from processor._payload import from_payload, from_payloads, param_hints, return_hint, to_payload, to_payloads
from processor.exceptions import PayloadError


@dataclass
class Line:
    sku: str
    qty: int


@dataclass
class Cart:
    owner: str
    lines: list[Line]
    primary: Line | None = None
    by_sku: dict[str, Line] = field(default_factory=dict)
    pair: tuple[Line, int] | None = None


def test_encodings_by_value() -> None:
    assert to_payload(None) == {"encoding": "binary/null", "data": b""}
    assert to_payload(b"\x00\xff") == {"encoding": "binary/plain", "data": b"\x00\xff"}
    assert to_payload({"a": [1, 2.5, True, None, "é"]}) == {
        "encoding": "json/plain",
        "data": '{"a":[1,2.5,true,null,"é"]}'.encode(),
    }


@pytest.mark.parametrize("value", [None, b"raw", 0, -3, 1.5, "text", True, [1, "x"], {"k": {"n": None}}])
def test_json_types_round_trip(value: Any) -> None:
    assert from_payload(to_payload(value)) == value


def test_nested_dataclasses_round_trip_by_hint() -> None:
    cart = Cart("ann", [Line("a", 1), Line("b", 2)], Line("a", 1), {"b": Line("b", 2)}, (Line("c", 3), 4))
    payload = to_payload(cart)
    assert from_payload(payload) == {
        "owner": "ann",
        "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
        "primary": {"sku": "a", "qty": 1},
        "by_sku": {"b": {"sku": "b", "qty": 2}},
        "pair": [{"sku": "c", "qty": 3}, 4],
    }
    assert from_payload(payload, Cart) == cart
    assert from_payload(to_payload([Line("x", 1)]), list[Line]) == [Line("x", 1)]


def test_unknown_keys_are_dropped_and_missing_fields_are_a_payload_error() -> None:
    assert from_payload(to_payload({"sku": "a", "qty": 1, "added_later": True}), Line) == Line("a", 1)
    with pytest.raises(PayloadError, match="cannot build Line"):
        from_payload(to_payload({"sku": "a"}), Line)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({1, 2}, "set"), (datetime(2024, 1, 1), "datetime"), ({"when": object()}, "object"), (math.nan, "float")],
)
def test_unsupported_values_raise_payload_error_with_a_fix(value: Any, type_name: str) -> None:
    with pytest.raises(PayloadError, match=type_name) as info:
        to_payload(value)
    assert "use JSON types" in str(info.value) and "dataclass" in str(info.value)
    assert isinstance(info.value, TypeError)  # PayloadError is also a TypeError


def test_bad_payloads() -> None:
    with pytest.raises(PayloadError, match="unknown payload encoding 'avro'"):
        from_payload({"encoding": "avro", "data": b""})
    with pytest.raises(PayloadError, match="valid UTF-8 JSON"):
        from_payload({"encoding": "json/plain", "data": b"{nope"})
    with pytest.raises(PayloadError, match="surrogates not allowed"):
        to_payload("lone \ud800 surrogate")
    with pytest.raises(PayloadError, match="not a Payload record"):
        from_payload({"data": b""})


def test_plural_helpers_and_hints() -> None:
    def fn(cart: Cart, n: int, *rest: str) -> list[Line]:
        return []

    assert param_hints(fn) == (Cart, int)
    assert return_hint(fn) == list[Line]
    payloads = to_payloads([Cart("a", []), 2, "extra"])
    assert from_payloads(payloads, param_hints(fn)) == [Cart("a", []), 2, "extra"]
