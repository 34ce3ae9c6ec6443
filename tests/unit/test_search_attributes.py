"""Search attributes and memo (issue 9 item 1): typed, set at start, changed by workflow code,
recorded in history so a replay is exact, carried into a run that continues as new."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from processor import Replayer, Text, workflow
from processor._search import apply_upsert, decode_attributes, encode_attributes, wire_problem
from processor.exceptions import ConfigError, NondeterminismError, WorkflowNotFoundError
from processor.testing import WorkflowEnvironment

DUE = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


@workflow.defn
class Onboarding:
    @workflow.run
    async def run(self, steps: int) -> dict[str, Any]:
        seen = [dict(workflow.info().search_attributes)]
        for step in range(1, steps + 1):
            workflow.upsert_search_attributes({"Step": step, "Stage": f"step-{step}"})
            await asyncio.sleep(3600)
        workflow.upsert_search_attributes({"Stage": None, "Done": True})
        seen.append(dict(workflow.info().search_attributes))
        return {"first": _jsonable(seen[0]), "last": _jsonable(seen[1]), "memo": dict(workflow.info().memo)}


@workflow.defn
class Looping:
    @workflow.run
    async def run(self, left: int) -> dict[str, Any]:
        if left:
            workflow.upsert_search_attributes({"Left": left})
            workflow.continue_as_new(left - 1)
        return {"attrs": _jsonable(workflow.info().search_attributes), "memo": dict(workflow.info().memo)}


@workflow.defn
class BadUpsert:
    @workflow.run
    async def run(self) -> None:
        workflow.upsert_search_attributes({"Blob": "x" * 3000})


def _jsonable(attrs: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in attrs.items()}


def test_every_type_round_trips_through_the_wire_form() -> None:
    given = {"CustomerId": "c1", "Notes": Text("rush order, fragile"), "Amount": 12.5, "Items": 3, "Vip": True,
             "Due": DUE, "Tags": ["eu", "b2b"]}
    wire = encode_attributes(given)
    assert {k: v["type"] for k, v in wire.items()} == {
        "CustomerId": "keyword", "Notes": "text", "Amount": "float", "Items": "int", "Vip": "bool",
        "Due": "datetime", "Tags": "keyword_list"}
    assert wire["Due"]["value"] == int(DUE.timestamp() * 1000)
    back = decode_attributes(wire)
    assert back == given
    assert isinstance(back["Notes"], Text) and not isinstance(back["CustomerId"], Text)


@pytest.mark.parametrize(("attrs", "fix"), [
    ({"1st": "x"}, "not starting with a digit"),
    ({"WorkflowType": "x"}, "reserved"),
    ({"Due": datetime(2026, 1, 1)}, "naive datetime"),  # noqa: DTZ001 - the mistake under test
    ({"Blob": b"x"}, "use str, Text, int"),
    ({"Score": float("nan")}, "NaN"),
    ({"Big": 2**64}, "64 bits"),
    ({"Key": "k" * 3000}, "at most 2048"),
    ({"Gone": None}, "None only removes one in an upsert"),
])
def test_a_bad_attribute_is_refused_at_the_call_saying_what_to_fix(attrs: dict[str, Any], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        encode_attributes(attrs)


def test_the_processor_refuses_wire_attributes_another_language_got_wrong() -> None:
    assert wire_problem({"Amount": {"type": "int", "value": "12"}}) == \
        "search attribute 'Amount' of type int needs a long value; got str"
    assert "one of keyword" in (wire_problem({"A": {"type": "keywords", "value": "x"}}) or "")
    assert wire_problem({"A": {"type": "keyword", "value": None}}, upsert=True) is None
    assert apply_upsert({"A": {"type": "int", "value": 1}, "B": {"type": "bool", "value": True}},
                        {"A": {"type": "keyword", "value": None}, "C": {"type": "int", "value": 2}}) == {
        "B": {"type": "bool", "value": True}, "C": {"type": "int", "value": 2}}


def test_attributes_and_memo_are_set_at_start_changed_by_the_workflow_and_recorded() -> None:
    with WorkflowEnvironment(workflows=[Onboarding]) as env:
        handle = env.start_workflow(Onboarding.run, 2, id="onb-1",
                                    search_attributes={"CustomerId": "c1", "Due": DUE, "Stage": "new"},
                                    memo={"owner": {"name": "ann"}})
        described = env.describe("onb-1")
        assert described["search_attributes"] == {"CustomerId": "c1", "Due": DUE, "Stage": "step-1", "Step": 1}
        assert described["memo"] == {"owner": {"name": "ann"}}
        result = handle.result()
        assert result["first"] == {"CustomerId": "c1", "Due": DUE.isoformat(), "Stage": "new"}
        assert result["last"] == {"CustomerId": "c1", "Due": DUE.isoformat(), "Step": 2, "Done": True}
        assert result["memo"] == {"owner": {"name": "ann"}}
        history = env.history("onb-1")
        assert history[0]["search_attributes"]["CustomerId"] == {"type": "keyword", "value": "c1"}
        upserts = [e["search_attributes"] for e in history if e["type"] == "SearchAttributesUpserted"]
        assert upserts[-1] == {"Stage": {"type": "keyword", "value": None}, "Done": {"type": "bool", "value": True}}
        assert len(upserts) == 3
        assert env.describe("onb-1")["search_attributes"] == {"CustomerId": "c1", "Due": DUE, "Step": 2, "Done": True}
    replayed = Replayer([Onboarding]).replay(history)
    assert replayed.closed and replayed.commands_pending == [], "the upserts replay as recorded"


def test_a_replay_whose_code_upserts_differently_is_nondeterministic() -> None:
    with WorkflowEnvironment(workflows=[Onboarding]) as env:
        env.start_workflow(Onboarding.run, 1, id="onb-2").result()
        history = env.history("onb-2")
    edited = [e for e in history if not (e["type"] == "SearchAttributesUpserted" and "Done" in e["search_attributes"])]
    for seq, e in enumerate(edited, 1):
        e["seq"] = seq
    with pytest.raises(NondeterminismError, match="SearchAttributesUpserted"):
        Replayer([Onboarding]).replay(edited)


def test_attributes_and_memo_carry_into_the_run_that_continues_as_new() -> None:
    with WorkflowEnvironment(workflows=[Looping]) as env:
        handle = env.start_workflow(Looping.run, 2, id="loop-1", search_attributes={"Kind": "batch"},
                                    memo={"why": "nightly"})
        assert handle.result() == {"attrs": {"Kind": "batch", "Left": 1}, "memo": {"why": "nightly"}}


def test_an_upsert_over_the_limits_holds_the_workflow_saying_why() -> None:
    with WorkflowEnvironment(workflows=[BadUpsert]) as env:
        env.start_workflow(BadUpsert.run, id="bad-1")
        held = env.describe("bad-1")["held"]
        assert held is not None and "at most 2048" in held


def test_the_processor_refuses_a_start_whose_attributes_are_wrongly_typed() -> None:
    with WorkflowEnvironment(workflows=[Onboarding]) as env:
        from processor.client import Client

        rec = Client.start_record(Onboarding.run, (1,), "default", None)
        rec["search_attributes"] = {"Amount": {"type": "int", "value": "12"}}  # what a Java client could send
        reply = env._ask("StartWorkflow", "onb-3", rec)
        assert (reply["outcome"], reply["message"]) == (
            "refused", "search attribute 'Amount' of type int needs a long value; got str")
        with pytest.raises(WorkflowNotFoundError):
            env.describe("onb-3")
