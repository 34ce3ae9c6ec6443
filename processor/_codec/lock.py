"""The fingerprint lock (`schemas/fingerprints.lock`) and the schema-evolution gate.

The lock lists, per record, every released version: its number, its fingerprint (what old
records on the wire start with) and its full expanded schema (what the codec needs to read them).
Released versions are append-only; their fingerprints must never change.

    python -m processor._codec.lock check     # exit 1 if schemas/ and the lock disagree
    python -m processor._codec.lock release   # record changed schemas as new versions

`release` admits a change only if it is compatible both ways with every released version of the
record, judged by the reference `avro` package's ReaderWriterCompatibilityChecker: the new schema
must read old data (the processor replays years-old history), and old schemas must read new
data (processes on the previous release keep running during a rolling deploy).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from processor._codec.schemas import Schema, fingerprint_of, load_schemas
from processor._resources import schemas_dir
from processor.exceptions import ConfigError

__all__ = [
    "LOCK_FILE",
    "Released",
    "check",
    "compatibility_problems",
    "main",
    "read_lock",
    "release",
    "write_lock",
]

LOCK_FILE = "fingerprints.lock"
_RELEASE_HINT = "run `python -m processor._codec.lock release` (it checks compatibility) and commit the lock"


@dataclass(frozen=True)
class Released:
    version: int
    fingerprint: str
    schema: Schema


def read_lock(path: Path) -> dict[str, list[Released]]:
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: [Released(int(e["version"]), str(e["fingerprint"]), e["schema"]) for e in entries]
            for name, entries in raw.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the fingerprint lock {path} is unreadable: {exc}") from exc


def write_lock(path: Path, lock: dict[str, list[Released]]) -> None:
    # Sorted keys and fixed indentation so the file diffs cleanly and is byte-stable across runs.
    data = {
        name: [{"version": r.version, "fingerprint": r.fingerprint, "schema": r.schema} for r in entries]
        for name, entries in lock.items()
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def check(schemas_path: Path, lock_path: Path) -> list[str]:
    """What is wrong between the schemas and the lock; empty when the lock is up to date."""
    current = load_schemas(schemas_path)
    lock = read_lock(lock_path)
    problems: list[str] = []
    for name, entries in sorted(lock.items()):
        problems.extend(_lock_entry_problems(name, entries))
        if name not in current:
            problems.append(
                f"{name} is released (in {lock_path.name}) but no .avsc defines it any more: records "
                "already on the wire use it, so it must not be deleted; restore its .avsc"
            )
    for name, schema in current.items():
        entries = lock.get(name, [])
        if not entries:
            problems.append(f"{name} is new and not released yet: {_RELEASE_HINT}")
            continue
        latest = entries[-1]
        fp = fingerprint_of(schema)
        if fp != latest.fingerprint:
            problems.append(
                f"{name} changed since its released v{latest.version} (fingerprint {latest.fingerprint} "
                f"-> {fp}); a released schema must not change in place: {_RELEASE_HINT}"
            )
        elif schema != latest.schema:
            problems.append(
                f"{name} differs from its released v{latest.version} in docs, defaults or aliases "
                f"(same fingerprint): {_RELEASE_HINT}"
            )
        problems.extend(compatibility_problems(name, schema, entries))
    return problems


def release(schemas_path: Path, lock_path: Path) -> list[str]:
    """Record every changed or new schema in the lock; return what was released.

    Raises ConfigError, writing nothing, if any change is incompatible with a released version or
    a released record was deleted.
    """
    current = load_schemas(schemas_path)
    lock = read_lock(lock_path)
    refused = [f"{name} is released but its .avsc is gone; restore it" for name in lock if name not in current]
    released: list[str] = []
    for name, schema in current.items():
        entries = list(lock.get(name, []))
        refused.extend(_lock_entry_problems(name, entries))
        fp = fingerprint_of(schema)
        if entries and entries[-1].fingerprint == fp and entries[-1].schema == schema:
            continue
        incompatible = compatibility_problems(name, schema, entries)
        if incompatible:
            refused.extend(incompatible)
            continue
        if entries and entries[-1].fingerprint == fp:
            # Docs or defaults only: the bytes on the wire are the same, so it stays the same version.
            entries[-1] = Released(entries[-1].version, fp, schema)
            released.append(f"{name} v{entries[-1].version} updated in place (docs/defaults; fingerprint {fp})")
        else:
            version = entries[-1].version + 1 if entries else 1
            entries.append(Released(version, fp, schema))
            released.append(f"{name} v{version} released (fingerprint {fp})")
        lock[name] = entries
    if refused:
        raise ConfigError("release refused, the lock is unchanged:\n  " + "\n  ".join(refused))
    if released:
        write_lock(lock_path, dict(sorted(lock.items())))
    return released


def compatibility_problems(name: str, schema: Schema, entries: list[Released]) -> list[str]:
    """Why `schema` cannot replace the released versions `entries` of record `name` (both ways)."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro ships no hints
    new = _avro(schema)
    problems: list[str] = []
    for entry in entries:
        old = _avro(entry.schema)
        for reader, writer, direction in (
            (new, old, f"the new schema cannot read v{entry.version} data"),
            (old, new, f"v{entry.version} readers cannot read data of the new schema"),
        ):
            result = checker.get_compatibility(reader, writer)
            if result.compatibility is not SchemaCompatibilityType.compatible:
                problems.append(f"{name}: {direction}: {_describe(result)}")
    return problems


def _lock_entry_problems(name: str, entries: list[Released]) -> list[str]:
    problems: list[str] = []
    for number, entry in enumerate(entries, start=1):
        if entry.version != number:
            problems.append(f"{name}: lock versions must run 1, 2, 3...; entry {number} says v{entry.version}")
        recomputed = fingerprint_of(entry.schema)
        if recomputed != entry.fingerprint:
            problems.append(
                f"{name} v{entry.version}: the released fingerprint {entry.fingerprint} no longer matches "
                f"its schema (now {recomputed}); released fingerprints must never change (was the lock "
                "edited by hand, or did the canonical-form implementation change?)"
            )
    return problems


def _avro(schema: Schema) -> Any:
    return avro.schema.parse(json.dumps(schema))


def _describe(result: Any) -> str:
    kinds = ", ".join(sorted(kind.value for kind in result.incompatibilities))
    where = ", ".join(sorted(result.locations))
    what = "; ".join(sorted(result.messages))
    return f"{kinds} at {where}: {what}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processor._codec.lock", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["check", "release"])
    parser.add_argument("--schemas", type=Path, default=None, help="schemas folder (default: the package's)")
    parser.add_argument("--lock", type=Path, default=None, help=f"lock file (default: <schemas>/{LOCK_FILE})")
    args = parser.parse_args(argv)
    folder: Path = args.schemas or schemas_dir()
    lock_path: Path = args.lock or folder / LOCK_FILE
    try:
        if args.command == "check":
            problems = check(folder, lock_path)
            if problems:
                print(f"{lock_path} is out of date:\n  " + "\n  ".join(problems), file=sys.stderr)
                return 1
            print(f"{lock_path} is up to date ({len(read_lock(lock_path))} records)")
            return 0
        done = release(folder, lock_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("\n".join(done) if done else f"nothing to release: {lock_path} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
