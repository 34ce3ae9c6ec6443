"""Byte layouts of keys, in Kafka and in RocksDB, in one place.

RocksDB keys sort bytewise, so numbers are big-endian and the workflow id is followed by a NUL
(ids never contain NUL: the client refuses them) so that one workflow's keys form a prefix range.
"""

from __future__ import annotations

import os
import struct

_U64 = struct.Struct(">Q")


RUN_ID_LENGTH = 32  # run ids are 32 lowercase hex digits (128 random bits)
_HEX = frozenset(b"0123456789abcdef")


def new_run_id() -> str:
    return os.urandom(16).hex()


def is_run_id(run_id: str) -> bool:
    return len(run_id) == RUN_ID_LENGTH and all(c in _HEX for c in run_id.encode())


def event_key(workflow_id: str, run_id: str, seq: int) -> bytes:
    """wf.events key: unique per (workflow, run, seq) so compaction never drops history, also
    of earlier runs of the same id. `<id>@<run>@<seq, 12 digits>`; a run started before runs
    existed (run_id "") keeps the old layout `<id>@<seq>`."""
    if not run_id:
        return f"{workflow_id}@{seq:012d}".encode()
    return f"{workflow_id}@{run_id}@{seq:012d}".encode()


def split_event_key(key: bytes) -> tuple[str, str, int] | None:
    """(workflow id, run id, seq) of a wf.events key, or None if it is not one. Parsed from the
    right by fixed widths: the seq is the 12 digits after the last '@', the run the 32 hex digits
    before it. A key without a run is the old layout (run ""). The one ambiguity -- an old-layout
    key whose id itself ends in '@' + 32 hex digits -- is settled by the event's own workflow_id,
    which readers compare too (client.history_events)."""
    rest, sep, seq = key.rpartition(b"@")
    if not sep or len(seq) != 12 or not seq.isdigit():
        return None
    wid, sep, run = rest.rpartition(b"@")
    if sep and len(run) == RUN_ID_LENGTH and all(c in _HEX for c in run):
        return wid.decode(errors="replace"), run.decode(), int(seq)
    return rest.decode(errors="replace"), "", int(seq)


def timer_topic_key(workflow_id: str, timer_key: str) -> bytes:
    return f"{workflow_id}@t{timer_key}".encode()


def split_timer_topic_key(key: bytes) -> tuple[str, str]:
    wid, _, tkey = key.decode().rpartition("@t")
    return wid, tkey


def history_key(workflow_id: str, run_id: str, seq: int) -> bytes:
    return run_prefix(workflow_id, run_id) + _U64.pack(seq)


def run_prefix(workflow_id: str, run_id: str) -> bytes:
    """The key prefix of one run's events in the history column family."""
    return workflow_id.encode() + b"\x00" + run_id.encode() + b"\x00"


def workflow_prefix(workflow_id: str) -> bytes:
    """The key prefix of one workflow in the timer_refs column family."""
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
