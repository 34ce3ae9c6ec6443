"""Load the `.avsc` files of a schemas folder into self-contained schemas.

Each file holds one record and refers to records of other files by full name. Every schema is
expanded here so that it defines, inline and at first use, every record it refers to: such a
schema is what fastavro, the `avro` package, the lock file and a Java/Go user all accept without a
shared name registry, and its parsing canonical form (hence its fingerprint) does not depend on
the order in which files were read.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint, to_parsing_canonical_form

from processor.exceptions import ConfigError

__all__ = ["MAGIC", "fingerprint_of", "load_schemas"]

MAGIC = b"\xc3\x01"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})

Schema = dict[str, Any]


def fingerprint_of(schema: Schema) -> str:
    """CRC-64-AVRO of the parsing canonical form, as hex of the 8 little-endian wire bytes."""
    # fastavro already returns the bytes in little-endian order, as Java's
    # SchemaNormalization.parsingFingerprint64 does when written by BinaryMessageEncoder.
    return str(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def load_schemas(folder: Path) -> dict[str, Schema]:
    """Every record under `folder`, by full name (sorted), each expanded to stand alone."""
    raw: dict[str, Schema] = {}
    origin: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.avsc")):
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read schema {path}: {exc}") from exc
        if not isinstance(schema, dict) or schema.get("type") != "record" or "name" not in schema:
            raise ConfigError(f"{path} must hold one Avro record schema (an object with type 'record')")
        full = _full_name(schema["name"], schema.get("namespace"))
        if "." not in full:
            raise ConfigError(f"{path}: record {full} needs a namespace, e.g. wf.commands.v1")
        if full in raw:
            raise ConfigError(f"record {full} is defined twice: in {origin[full]} and {path}")
        raw[full] = schema
        origin[full] = path
    return {name: _expand(raw[name], None, set(), raw, origin[name]) for name in sorted(raw)}


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _expand(node: Any, namespace: str | None, defined: set[str], raw: dict[str, Schema], origin: Path) -> Any:
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _full_name(node, namespace)
        if full in defined:
            # A later use, or a recursive one (Failure.cause): Avro wants the bare name here.
            return full
        if full not in raw:
            raise ConfigError(f"{origin}: refers to unknown type {node!r} (looked for {full})")
        return _expand(raw[full], namespace, defined, raw, origin)
    if isinstance(node, list):
        return [_expand(branch, namespace, defined, raw, origin) for branch in node]
    if not isinstance(node, dict):
        raise ConfigError(f"{origin}: {node!r} is not an Avro schema")
    out = copy.deepcopy(node)
    kind = node.get("type")
    if kind in _NAMED:
        full = _full_name(node["name"], node.get("namespace", namespace))
        if full in defined:
            raise ConfigError(f"{origin}: defines {full} twice")
        defined.add(full)
        inner_ns = full.rpartition(".")[0] or None
        for field in out.get("fields", []):
            field["type"] = _expand(field["type"], inner_ns, defined, raw, origin)
    elif kind == "array":
        out["items"] = _expand(node["items"], namespace, defined, raw, origin)
    elif kind == "map":
        out["values"] = _expand(node["values"], namespace, defined, raw, origin)
    elif kind not in _PRIMITIVES:
        out["type"] = _expand(kind, namespace, defined, raw, origin)
    return out
