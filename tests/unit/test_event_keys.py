"""wf.events keys are parsed exactly: ids that contain '@' or share a prefix never mix (issue 6,
defect 6: `processor show col2` printed the start of `col2@000000000001`)."""

from __future__ import annotations

from typing import Any

import pytest

from processor._codec import default_codec
from processor._engine.keys import event_key, split_event_key
from processor.client import history_events

IDS = ["col2", "col2@000000000001", "col2@", "@col2", "a@b@c", "col2@00000000000x", "ordre-é", "col"]


@pytest.mark.parametrize("wid", IDS)
@pytest.mark.parametrize("seq", [1, 42, 999_999_999_999])
def test_split_inverts_event_key(wid: str, seq: int) -> None:
    assert split_event_key(event_key(wid, seq)) == (wid, seq)


def test_an_id_that_looks_like_a_key_of_another_is_still_itself() -> None:
    # `col2@000000000001` is exactly the key of col2's first event, but as an id it gets a seq of its own.
    assert split_event_key(b"col2@000000000001") == ("col2", 1)
    assert split_event_key(event_key("col2@000000000001", 7)) == ("col2@000000000001", 7)


@pytest.mark.parametrize("key", [b"", b"col2", b"col2@", b"col2@1", b"col2@0000000000001", b"col2@00000000000x",
                                 b"col2@t s1", b"col2@ts1", b"col2@-00000000001"])
def test_what_is_not_an_event_key(key: bytes) -> None:
    assert split_event_key(key) is None


def _records(events: list[tuple[str, int]]) -> list[tuple[bytes | None, bytes | None]]:
    codec = default_codec()
    name = "wf.events.v1.SignalReceived"
    out: list[tuple[bytes | None, bytes | None]] = []
    for wid, seq in events:
        rec = {"workflow_id": wid, "seq": seq, "time_ms": seq, "signal_name": "s", "args": [], "request_id": None}
        out.append((event_key(wid, seq), codec.encode(name, rec)))
    return out


def _decode(value: bytes) -> dict[str, Any]:
    return default_codec().decode_typed(value)


def test_history_takes_exactly_one_workflow_from_a_shared_partition() -> None:
    records = _records([("col2@000000000001", 1), ("col2", 1), ("col2@000000000001", 2), ("col2", 2),
                        ("col", 1), ("col2@", 1), ("col22", 1)])
    records += [(b"col2@000000000003", None), (b"not a key", b"x"), (None, b"x")]  # tombstone, foreign records
    assert [(e["workflow_id"], e["seq"]) for e in history_events("col2", records, _decode)] == [
        ("col2", 1), ("col2", 2)]
    assert [(e["workflow_id"], e["seq"]) for e in history_events("col2@000000000001", records, _decode)] == [
        ("col2@000000000001", 1), ("col2@000000000001", 2)]
    assert [e["seq"] for e in history_events("col", records, _decode)] == [1]
    assert history_events("col2@0", records, _decode) == []


def test_history_checks_the_decoded_event_names_the_workflow_too() -> None:
    ((_, value),) = _records([("other", 5)])
    assert history_events("col2", [(event_key("col2", 5), value)], _decode) == []


def test_history_is_in_seq_order_and_keeps_one_event_per_seq() -> None:
    records = _records([("w", 3), ("w", 1), ("w", 2), ("w", 1)])
    assert [e["seq"] for e in history_events("w", records, _decode)] == [1, 2, 3]
