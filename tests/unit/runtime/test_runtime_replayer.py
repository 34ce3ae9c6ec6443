from __future__ import annotations

from pathlib import Path

import pytest
from test_runtime_activities import run_checkout
from test_runtime_nondeterminism import CheckoutRefundsInstead
from wf_samples import Approval, Checkout, Order

from processor.exceptions import ConfigError, DecodeError, NondeterminismError
from processor.replayer import Replayer, history_from_json, history_to_json

GOLDEN = Path(__file__).parent / "golden" / "checkout.jsonl"


def test_golden_history_replays() -> None:
    result = Replayer(workflows=[Approval, Checkout]).replay_json(GOLDEN)
    assert (result.workflow_id, result.commands_pending, result.closed) == ("wf-1", [], True)


def test_a_history_recorded_before_schedule_to_start_replays() -> None:
    # ActivityScheduled v1 had no schedule_to_start_timeout_ms: such histories replay unchanged.
    old = GOLDEN.with_name("checkout_before_schedule_to_start.jsonl")
    assert "schedule_to_start" not in old.read_text()
    result = Replayer(workflows=[Approval, Checkout]).replay_json(old)
    assert (result.workflow_id, result.commands_pending, result.closed) == ("wf-1", [], True)


def test_golden_history_is_what_the_code_records_today() -> None:
    # If this fails, the runtime changed what it records: old histories may no longer replay.
    assert history_to_json(run_checkout(always_replay=False).history) == GOLDEN.read_text()


def test_json_form_round_trips_bytes_as_base64() -> None:
    history = history_from_json(GOLDEN.read_text())
    assert history[0]["args"][0] == {"encoding": "json/plain", "data": b'{"id":"o-1","amount":250}'}
    assert '"data":"eyJpZCI6Im8tMSIsImFtb3VudCI6MjUwfQ=="' in GOLDEN.read_text().splitlines()[0]
    assert history_to_json(history) == GOLDEN.read_text()


def test_partial_history_reports_pending_commands() -> None:
    history = history_from_json(GOLDEN.read_text())[:3]  # started, scheduled, completed
    result = Replayer([Checkout]).replay(history)
    assert not result.closed
    assert [(c["type"], c["activity_type"]) for c in result.commands_pending] == [("ActivityScheduled", "ship")]


def test_changed_code_raises_nondeterminism() -> None:
    with pytest.raises(NondeterminismError, match="seq 4"):
        Replayer([CheckoutRefundsInstead]).replay(history_from_json(GOLDEN.read_text()))


def test_unknown_type_and_bad_histories() -> None:
    history = history_from_json(GOLDEN.read_text())
    with pytest.raises(ConfigError, match=r"no workflow class for type 'Checkout'.*Replayer\(workflows="):
        Replayer([Approval]).replay(history)
    with pytest.raises(DecodeError, match="starts with WorkflowStarted"):
        Replayer([Checkout]).replay(history[1:])
    with pytest.raises(DecodeError, match="also holds events of"):
        Replayer([Checkout]).replay([*history, {**history[-1], "workflow_id": "other"}])
    with pytest.raises(DecodeError, match="line 2"):
        history_from_json('{"type":"WorkflowStarted"}\nnot json\n')
    with pytest.raises(ConfigError, match="two workflow classes"):
        Replayer([Checkout, CheckoutRefundsInstead])
    with pytest.raises(ConfigError, match="decorate the class with `@workflow.defn`"):
        Replayer([Order])
