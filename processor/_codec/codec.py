"""Avro single-object encoding of the wire records, with decoding of older released versions.

A value on the wire is `C3 01` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's parsing canonical form + the Avro binary body. The fingerprint names the exact writer
schema, so a reader needs no registry: it looks the fingerprint up among the current schemas and
the released versions listed in `fingerprints.lock`, and resolves older bodies into the current
shape (fields added since get their defaults).

Everything that can be computed once (parsed schemas, prefixes, headers) is computed in
`from_dir`; `encode` and `decode` only look up a dict and call fastavro.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from processor._codec.schemas import MAGIC, fingerprint_of, load_schemas
from processor._resources import schemas_dir
from processor.exceptions import ConfigError, DecodeError, PayloadError

__all__ = ["Codec", "default_codec"]

# Every top-level schema is a record, so the reader returns a dict; typed once here, not cast per call.
_read_record = cast("Callable[..., dict[str, Any]]", schemaless_reader)

_HEADER_LEN = 10  # magic (2) + fingerprint (8)

# What fastavro raises on bodies that do not fit the writer schema: short reads, varints that
# overflow, union indexes out of range, invalid UTF-8, resolution failures.
_READ_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    MemoryError,
    StopIteration,
)
_WRITE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


@dataclass(frozen=True, slots=True)
class _Writer:
    prefix: bytes
    schema: Any  # fastavro parsed schema


@dataclass(frozen=True, slots=True)
class _Reader:
    full_name: str
    writer: Any
    reader: Any  # None when writer is the current schema: fastavro then skips resolution
    version: str  # for error messages: "current" or "released v3"


class Codec:
    """Encodes and decodes the wire records of one schema set. Immutable, so shareable across threads."""

    def __init__(self, schemas: dict[str, dict[str, Any]], released: dict[str, list[tuple[str, dict[str, Any]]]]):
        """`schemas`: current expanded schemas by full name; `released`: per full name, the
        (fingerprint hex, expanded schema) of each released version that old data may carry."""
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[bytes, _Reader] = {}
        self._headers: dict[str, list[tuple[str, bytes]]] = {}
        for name, schema in schemas.items():
            parsed = parse_schema(schema)
            fp = bytes.fromhex(fingerprint_of(schema))
            self._writers[name] = _Writer(MAGIC + fp, parsed)
            self._readers[fp] = _Reader(name, parsed, None, "current")
            self._headers[name] = [("type", name.encode())]
        for name, versions in released.items():
            current = self._writers.get(name)
            if current is None:
                # A record removed from schemas/: its data cannot be read into a current shape.
                # `lock check` reports this; the codec only declines such records.
                continue
            for number, (fp_hex, schema) in enumerate(versions, start=1):
                fp = bytes.fromhex(fp_hex)
                if fp not in self._readers:
                    self._readers[fp] = _Reader(name, parse_schema(schema), current.schema, f"released v{number}")
        self._names = sorted(self._writers)

    @classmethod
    def from_dir(cls, schemas_path: Path, lock_path: Path | None = None) -> Codec:
        """A codec for the `.avsc` files under `schemas_path`, also reading the versions released in
        `lock_path` (a `fingerprints.lock`); without a lock only current-schema bytes decode."""
        released: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        if lock_path is not None:
            try:
                lock = json.loads(lock_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read the fingerprint lock {lock_path}: {exc}") from exc
            released = {
                name: [(entry["fingerprint"], entry["schema"]) for entry in entries] for name, entries in lock.items()
            }
        return cls(load_schemas(schemas_path), released)

    def names(self) -> list[str]:
        return list(self._names)

    def encode(self, full_name: str, record: dict[str, Any]) -> bytes:
        writer = self._writers.get(full_name)
        if writer is None:
            raise PayloadError(f"cannot encode unknown record type {full_name!r}; known: {', '.join(self._names)}")
        buf = io.BytesIO()
        buf.write(writer.prefix)
        try:
            schemaless_writer(buf, writer.schema, record)
        except _WRITE_ERRORS as exc:
            raise PayloadError(f"{full_name} record does not fit its schema: {_why(record, writer, exc)}") from None
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if len(data) < _HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError(_bad_header(data))
        fp = data[2:_HEADER_LEN]
        entry = self._readers.get(fp)
        if entry is None:
            raise DecodeError(
                f"unknown schema fingerprint {fp.hex()}: the record was written with a schema this "
                "process does not know (a newer release, or another system's schema). Deploy the "
                "latest schemas/ and fingerprints.lock"
            )
        buf = io.BytesIO(data)
        buf.seek(_HEADER_LEN)
        try:
            record = _read_record(buf, entry.writer, entry.reader)
        except _READ_ERRORS as exc:
            raise DecodeError(
                f"body of a {entry.full_name} record ({entry.version} schema, fingerprint {fp.hex()}) "
                f"does not parse: {type(exc).__name__}: {exc}"
            ) from None
        extra = len(data) - buf.tell()
        if extra:
            raise DecodeError(
                f"{extra} unexpected trailing bytes after a {entry.full_name} record "
                f"({entry.version} schema, fingerprint {fp.hex()}): the body is corrupt"
            )
        return entry.full_name, record

    def decode_checked(
        self, data: bytes, headers: Sequence[tuple[str, bytes | None]] | None
    ) -> tuple[str, dict[str, Any]]:
        """`decode`, and refuse a record whose `type` header names another record than the
        fingerprint in its body does (a record without a `type` header is not refused).

        Consumers route by the header before decoding (docs/protocol.md), so a record whose
        header and body disagree would be handled as one thing by them and as another by us:
        it is an error of its producer, reported, not guessed at."""
        claimed = self.type_from_headers(headers)
        name, record = self.decode(data)
        if claimed is not None and claimed != name:
            raise DecodeError(
                f"the type header says {claimed} but the body's schema fingerprint is that of {name}: "
                "the producer set a wrong type header (or copied the headers of another record); "
                f"fix it to send type={name}"
            )
        return name, record

    def decode_typed(self, data: bytes) -> dict[str, Any]:
        """Decode a top-level record and put its short record name under "type" (e.g.
        "ActivityScheduled"): the shape the runtime, the engine's fold and the client use."""
        name, record = self.decode(data)
        record["type"] = name.rpartition(".")[2]
        return record

    def decode_as(self, data: bytes, expected_full_name: str) -> dict[str, Any]:
        name, record = self.decode(data)
        if name != expected_full_name:
            raise DecodeError(f"expected a {expected_full_name} record, got a {name}")
        return record

    def headers(self, full_name: str) -> list[tuple[str, bytes]]:
        """The Kafka headers of a record of this type. Shared between calls: do not mutate."""
        try:
            return self._headers[full_name]
        except KeyError:
            raise PayloadError(f"unknown record type {full_name!r}") from None

    @staticmethod
    def type_from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
        """The `type` header's record name, or None when there is none (a header-less producer)."""
        if not headers:
            return None
        for key, value in headers:
            if key == "type" and value is not None:
                try:
                    return value.decode()
                except UnicodeDecodeError:
                    raise DecodeError(f"the type header is not UTF-8: {value[:40].hex(' ')}") from None
        return None


@functools.cache
def default_codec() -> Codec:
    """The process-wide codec over the shipped schemas and their fingerprint lock."""
    folder = schemas_dir()
    return Codec.from_dir(folder, folder / "fingerprints.lock")


def _bad_header(data: bytes) -> str:
    head = bytes(data[:_HEADER_LEN]).hex(" ") or "nothing"
    if len(data) >= 2 and data[:2] != MAGIC:
        return (
            f"not an Avro single-object encoded record: it starts with {head}, expected c3 01 "
            "(was it written by another serializer, e.g. Confluent's schema-registry format or JSON?)"
        )
    return (
        f"record too short: {len(data)} bytes ({head}); a single-object encoded record has at least "
        f"{_HEADER_LEN} (c3 01 + 8-byte fingerprint) before its body"
    )


def _why(record: object, writer: _Writer, exc: Exception) -> str:
    # fastavro's own errors do not always name the field; its validator does, but it is too slow
    # for the hot path, so it only runs once encoding has already failed.
    if not isinstance(record, dict):
        return f"expected a dict, got {type(record).__name__}"
    try:
        validate(record, writer.schema, raise_errors=True)
    except ValidationError as invalid:
        return "; ".join(str(error) for error in invalid.errors)
    return f"{type(exc).__name__}: {exc}"
