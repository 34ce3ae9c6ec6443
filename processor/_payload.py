"""The payload converter: user values <-> `Payload {encoding, data}` records (docs/model.md).

Three encodings, chosen by value: `binary/null` for None, `binary/plain` for bytes, `json/plain`
(compact UTF-8 JSON) for everything else JSON can carry, dataclasses and pydantic models included
(as objects). Decoding is guided by type hints: a dict becomes a dataclass when the hint is one,
recursively and best effort (unknown keys are dropped so an older dataclass still reads newer
data), or a pydantic model by its own validation. The configured codecs (processor/payloads.py:
compression, encryption) wrap the plain payload when writing and are unwrapped when reading.

Why JSON and not pickle: payloads cross languages on Kafka and live in history for months; a
reader must not need our Python classes (or trust them) to decode a record.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypedDict

from processor import payloads
from processor.exceptions import PayloadError

__all__ = [
    "Payload",
    "from_payload",
    "from_payloads",
    "param_hints",
    "return_hint",
    "to_payload",
    "to_payloads",
]

ENCODING_NULL = "binary/null"
ENCODING_BINARY = "binary/plain"
ENCODING_JSON = "json/plain"


class Payload(TypedDict):
    encoding: str
    data: bytes


_NULL_PAYLOAD_DATA = b""
_FIX = "use JSON types (dict, list, str, int, float, bool, None), bytes, or a dataclass of those"


def _json_default(value: object) -> object:
    # Called by json for anything it cannot encode itself: dataclass instances become objects
    # (asdict recurses into nested dataclasses); everything else is refused with a fix-it.
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if dump is not None and not isinstance(value, type):  # a pydantic (v2) model, by duck type
        return dump(mode="json")
    raise PayloadError(f"cannot convert a value of type {type(value).__qualname__} to a payload: {_FIX}")


# Built once: json.dumps/loads with any non-default option construct a new coder per call, which
# showed up in the runtime's profile (every activity argument and result passes through here).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False, ensure_ascii=False)
_DECODER = json.JSONDecoder()


def to_payload(value: object) -> Payload:
    """Encode one value, then apply the configured codecs (processor/payloads.py); raises
    `PayloadError` naming the type it cannot encode."""
    plain = None
    if payloads.CONVERTERS:  # the user's converters first
        for converter in payloads.CONVERTERS:
            plain = converter.to_payload(value)
            if plain is not None:
                break
    if plain is None:
        plain = _plain_payload(value)
    codecs = payloads.chain()
    return plain if codecs is None else codecs.encode(plain)


def _plain_payload(value: object) -> Payload:
    if value is None:
        return {"encoding": ENCODING_NULL, "data": _NULL_PAYLOAD_DATA}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"encoding": ENCODING_BINARY, "data": bytes(value)}
    try:
        data = _ENCODER.encode(value).encode()
    except PayloadError:
        raise
    except (TypeError, ValueError) as exc:
        # ValueError: NaN/inf (not JSON), a circular reference, a lone surrogate (not UTF-8);
        # TypeError: e.g. a tuple as a dict key.
        raise PayloadError(
            f"cannot convert a value of type {type(value).__qualname__} to a payload ({exc}): {_FIX}"
        ) from exc
    return {"encoding": ENCODING_JSON, "data": data}


def to_payloads(values: Iterable[object]) -> list[Payload]:
    return [to_payload(v) for v in values]


def from_payload(payload: Payload | dict[str, Any], type_hint: object = None) -> Any:
    """Decode one payload; with a dataclass `type_hint` a JSON object is built into that class."""
    try:
        encoding = payload["encoding"]
        data = payload["data"]
    except (KeyError, TypeError) as exc:
        raise PayloadError(f"not a Payload record (needs 'encoding' and 'data'): {payload!r:.200}") from exc
    if encoding == ENCODING_JSON:
        try:
            value = _DECODER.decode(bytes(data).decode())
        except ValueError as exc:  # UnicodeDecodeError included
            raise PayloadError(f"json/plain payload does not hold valid UTF-8 JSON: {exc}") from exc
        return value if type_hint is None else _convert(value, type_hint)
    if encoding == ENCODING_NULL:
        return None
    if encoding == ENCODING_BINARY:
        return bytes(data)
    converter = payloads.CONVERTER_FOR.get(encoding) if payloads.CONVERTER_FOR else None
    if converter is not None:
        return converter.from_payload({"encoding": encoding, "data": bytes(data)}, type_hint)
    if encoding in payloads.layer_encodings():  # compressed, encrypted, a codec of the user's
        return from_payload(payloads.decode({"encoding": encoding, "data": data}), type_hint)
    raise PayloadError(
        f"unknown payload encoding {encoding!r}: expected {ENCODING_JSON}, {ENCODING_BINARY} or {ENCODING_NULL}"
    )


def from_payloads(payloads: Sequence[Payload | dict[str, Any]], hints: Sequence[object] = ()) -> list[Any]:
    return [from_payload(p, hints[i] if i < len(hints) else None) for i, p in enumerate(payloads)]


def _convert(value: Any, hint: object) -> Any:
    """Best-effort shaping of decoded JSON by a type hint; anything unrecognised passes through."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value) if isinstance(value, dict) else value
    if isinstance(hint, type) and hasattr(hint, "model_validate") and hasattr(hint, "model_fields"):
        return _build_model(hint, value)
    origin = typing.get_origin(hint)
    if origin is None:
        return value
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        # Optional[X] / X | Y: shape by the first member whose JSON shape fits the value.
        for arg in args:
            if isinstance(arg, type) and dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _build_dataclass(arg, value)
            member_origin = typing.get_origin(arg)
            if (member_origin in (list, tuple) and isinstance(value, list)) or (
                member_origin is dict and isinstance(value, dict)
            ):
                return _convert(value, arg)
        return value
    if origin is list and args and isinstance(value, list):
        return [_convert(v, args[0]) for v in value]
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        return tuple(_convert(v, h) for v, h in zip(value, args, strict=False)) + tuple(value[len(args) :])
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _convert(v, args[1]) for k, v in value.items()}
    return value


def _build_dataclass(cls: Any, value: dict[str, Any]) -> Any:
    hints = _field_hints(cls)
    kwargs = {
        f.name: _convert(value[f.name], hints.get(f.name))
        for f in dataclasses.fields(cls)
        if f.init and f.name in value
    }
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise PayloadError(f"cannot build {cls.__qualname__} from payload object {value!r:.200}: {exc}") from exc


def _build_model(cls: Any, value: Any) -> Any:
    """A pydantic model from decoded JSON (its own validation and coercion)."""
    try:
        return cls.model_validate(value)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise PayloadError(f"cannot build {cls.__qualname__} from payload {value!r:.200}: {exc}") from exc


@functools.cache
def _field_hints(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: decode without shaping
        return {}


@functools.cache
def param_hints(fn: Callable[..., Any], *, skip_first: bool = False) -> tuple[object, ...]:
    """Type hints of `fn`'s positional parameters, None where missing (cached: hot path).

    Resolved lazily, not at decoration time, because `from __future__ import annotations` lets a
    hint name a class defined later in the module.
    """
    params = list(inspect.signature(fn).parameters.values())
    if skip_first:
        params = params[1:]
    hints = _resolved_hints(fn)
    return tuple(
        hints.get(p.name)
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


@functools.cache
def return_hint(fn: Callable[..., Any]) -> object:
    return _resolved_hints(fn).get("return")


def _resolved_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a hint we cannot resolve only costs the conversion
        return {}
