"""Byte layouts of keys, in Kafka and in RocksDB, in one place.

RocksDB keys sort bytewise, so numbers are big-endian and the workflow id is followed by a NUL
(ids never contain NUL: the client refuses them) so that one workflow's keys form a prefix range.
"""

from __future__ import annotations

import struct

_U64 = struct.Struct(">Q")


def event_key(workflow_id: str, seq: int) -> bytes:
    """wf.events key: unique per (workflow, seq) so compaction never drops history."""
    return f"{workflow_id}@{seq:012d}".encode()


def split_event_key(key: bytes) -> tuple[str, int] | None:
    """(workflow id, seq) of a wf.events key, or None if it is not one. Exact: the seq is the
    last 12 digits after the last '@', so ids that contain '@' or share a prefix never mix."""
    wid, sep, seq = key.rpartition(b"@")
    if not sep or len(seq) != 12 or not seq.isdigit():
        return None
    return wid.decode(errors="replace"), int(seq)


def timer_topic_key(workflow_id: str, timer_key: str) -> bytes:
    return f"{workflow_id}@t{timer_key}".encode()


def split_timer_topic_key(key: bytes) -> tuple[str, str]:
    wid, _, tkey = key.decode().rpartition("@t")
    return wid, tkey


def history_key(workflow_id: str, seq: int) -> bytes:
    return workflow_id.encode() + b"\x00" + _U64.pack(seq)


def workflow_prefix(workflow_id: str) -> bytes:
    """The key prefix of one workflow in the history and timer_refs column families."""
    return workflow_id.encode() + b"\x00"


def workflow_key(workflow_id: str) -> bytes:
    return workflow_id.encode()


def timer_ref_key(workflow_id: str, timer_key: str) -> bytes:
    """timer_refs CF: (workflow, timer key) -> due, so a cancel finds the index entry."""
    return workflow_id.encode() + b"\x00" + timer_key.encode()


def due_key(due_ms: int, workflow_id: str, timer_key: str) -> bytes:
    """timers CF: the due-date index, scanned from the front for what is due."""
    return _U64.pack(due_ms) + workflow_id.encode() + b"\x00" + timer_key.encode()


def split_due_key(key: bytes) -> tuple[int, str, str]:
    due = _U64.unpack_from(key)[0]
    wid, _, tkey = key[8:].partition(b"\x00")
    return due, wid.decode(), tkey.decode()


def pack_u64(value: int) -> bytes:
    return _U64.pack(value)


def unpack_u64(data: bytes) -> int:
    value: int = _U64.unpack(data)[0]
    return value
