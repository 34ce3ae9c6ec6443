"""wf.events keys are parsed exactly: ids that contain '@' or share a prefix never mix (issue 6,
defect 6: `processor show col2` printed the start of `col2@000000000001`), and neither do the runs
of one id (issue 7): `<id>@<run>@<seq>`, or `<id>@<seq>` for a run from before runs existed."""

from __future__ import annotations

from typing import Any

import pytest

from processor._answers import history_events
from processor._codec import default_codec
from processor._engine.keys import event_key, new_run_id, split_event_key

RUN = new_run_id()
IDS = ["col2", "col2@000000000001", "col2@", "@col2", "a@b@c", "col2@00000000000x", "ordre-é", "col",
       f"x@{RUN}", f"x@{RUN}@000000000001"]


# Old-layout keys of ids ending in '@' + a run id are the one ambiguity; the event's own
# workflow_id settles it (test_an_old_layout_id_that_ends_like_a_run_is_still_found).
KEYED = [(wid, RUN) for wid in IDS] + [(wid, "") for wid in IDS if not wid.startswith("x@")]


@pytest.mark.parametrize(("wid", "run"), KEYED)
@pytest.mark.parametrize("seq", [1, 42, 999_999_999_999])
def test_split_inverts_event_key(wid: str, run: str, seq: int) -> None:
    assert split_event_key(event_key(wid, run, seq)) == (wid, run, seq)


def test_run_ids_are_32_hex_digits_and_differ() -> None:
    runs = {new_run_id() for _ in range(1000)}
    assert len(runs) == 1000 and all(len(r) == 32 and int(r, 16) >= 0 for r in runs)


def test_an_id_that_looks_like_a_key_of_another_is_still_itself() -> None:
    # `col2@000000000001` is exactly the key of col2's first event, but as an id it gets a seq of its own.
    assert split_event_key(b"col2@000000000001") == ("col2", "", 1)
    assert split_event_key(event_key("col2@000000000001", RUN, 7)) == ("col2@000000000001", RUN, 7)
    assert split_event_key(f"col2@{RUN}@000000000001".encode()) == ("col2", RUN, 1)


@pytest.mark.parametrize("key", [b"", b"col2", b"col2@", b"col2@1", b"col2@0000000000001", b"col2@00000000000x",
                                 b"col2@t s1", b"col2@ts1", b"col2@-00000000001"])
def test_what_is_not_an_event_key(key: bytes) -> None:
    assert split_event_key(key) is None


def _records(events: list[tuple[str, int]], run: str = RUN) -> list[tuple[bytes | None, bytes | None]]:
    codec = default_codec()
    name = "wf.events.v1.SignalReceived"
    out: list[tuple[bytes | None, bytes | None]] = []
    for wid, seq in events:
        rec = {"workflow_id": wid, "seq": seq, "time_ms": seq, "signal_name": "s", "args": [], "request_id": None}
        out.append((event_key(wid, run, seq), codec.encode(name, rec)))
    return out


def _decode(value: bytes) -> dict[str, Any]:
    return default_codec().decode_typed(value)


def test_history_takes_exactly_one_workflow_from_a_shared_partition() -> None:
    records = _records([("col2@000000000001", 1), ("col2", 1), ("col2@000000000001", 2), ("col2", 2),
                        ("col", 1), ("col2@", 1), ("col22", 1)])
    records += [(event_key("col2", RUN, 3), None), (b"not a key", b"x"), (None, b"x")]  # tombstone, foreign records
    assert [(e["workflow_id"], e["seq"]) for e in history_events("col2", records, _decode)] == [
        ("col2", 1), ("col2", 2)]
    assert [(e["workflow_id"], e["seq"]) for e in history_events("col2@000000000001", records, _decode)] == [
        ("col2@000000000001", 1), ("col2@000000000001", 2)]
    assert [e["seq"] for e in history_events("col", records, _decode)] == [1]
    assert history_events("col2@0", records, _decode) == []


def test_history_checks_the_decoded_event_names_the_workflow_too() -> None:
    ((_, value),) = _records([("other", 5)])
    assert history_events("col2", [(event_key("col2", RUN, 5), value)], _decode) == []


def test_history_is_in_seq_order_and_keeps_one_event_per_seq() -> None:
    records = _records([("w", 3), ("w", 1), ("w", 2), ("w", 1)])
    assert [e["seq"] for e in history_events("w", records, _decode)] == [1, 2, 3]


def test_history_is_the_latest_run_unless_a_run_is_asked_for() -> None:
    first, second = new_run_id(), new_run_id()
    records = _records([("w", 1), ("w", 2), ("w", 3)], run=first) + _records([("w", 1), ("w", 2)], run=second)
    assert [e["seq"] for e in history_events("w", records, _decode)] == [1, 2]
    assert [e["seq"] for e in history_events("w", records, _decode, run_id=first)] == [1, 2, 3]
    assert history_events("w", records, _decode, run_id=new_run_id()) == []


def test_a_run_from_before_runs_existed_is_read_too() -> None:
    old = _records([("w", 1), ("w", 2)], run="")
    assert split_event_key(old[0][0] or b"") == ("w", "", 1)
    assert [e["seq"] for e in history_events("w", old, _decode)] == [1, 2]
    assert [e["seq"] for e in history_events("w", old + _records([("w", 1)]), _decode)] == [1]


def test_an_old_layout_id_that_ends_like_a_run_is_still_found() -> None:
    wid = f"x@{RUN}"
    records = _records([(wid, 1), (wid, 2)], run="")  # key x@<RUN>@000000000001: parses as id x, run RUN
    assert [e["seq"] for e in history_events(wid, records, _decode)] == [1, 2]
    assert history_events("x", records, _decode) == []
