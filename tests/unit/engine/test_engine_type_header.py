"""A command whose `type` header names another record than its body is dead-lettered, not applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import CMD, CODEC, DLQ, EVENTS, EngineHarness, Record, encode_command

from processor import _payload


@pytest.fixture
def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    harness = EngineHarness(tmp_path)
    yield harness
    harness.close()


def _only_dlq(records: list[Record]) -> Record:
    assert [r.topic for r in records] == [DLQ], [(r.topic, r.key) for r in records]
    return records[0]


def test_a_type_header_that_disagrees_with_the_body_is_dead_lettered(h: EngineHarness) -> None:
    h.start("w", "ThreeSteps", 1)
    events = len(h.records(EVENTS))
    # The body is a TerminateWorkflow, the header claims a SignalWorkflow: neither is applied.
    value = encode_command("TerminateWorkflow", {"workflow_id": "w", "reason": "oops"})
    headers = CODEC.headers(CMD + "SignalWorkflow")
    dlq = _only_dlq(h.transaction([(h.partition_of("w"), b"w", value, headers)]))
    assert dlq.header("dlq.reason") == (
        "undecodable command: the type header says wf.commands.v1.SignalWorkflow but the body's schema "
        "fingerprint is that of wf.commands.v1.TerminateWorkflow: the producer set a wrong type header "
        "(or copied the headers of another record); fix it to send type=wf.commands.v1.TerminateWorkflow"
    )
    assert dlq.value == value and dlq.header("type") == CMD + "SignalWorkflow"  # kept as it came
    assert len(h.records(EVENTS)) == events and h.summary("w").running  # type: ignore[union-attr]
    assert h.engine.counters.dlq == 1


def test_a_matching_or_missing_type_header_is_applied(h: EngineHarness) -> None:
    start = encode_command("StartWorkflow", {"workflow_id": "a", "workflow_type": "ThreeSteps",
                                             "args": _payload.to_payloads((1,))})
    assert h.transaction([(h.partition_of("a"), b"a", start, None)])  # header-less producers still work
    assert h.summary("a") is not None
    h.start("b", "ThreeSteps", 1)  # the harness sends the matching header
    assert h.summary("b") is not None and h.engine.counters.dlq == 0
