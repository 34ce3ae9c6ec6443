"""The visibility projection's rules over in-memory mappings (its faust tables in production): fed
the wf.events records the real engine wrote (in the test kit), redelivered, queried."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from processor import workflow
from processor._codec import default_codec
from processor._visibility.record import run_key
from processor._visibility.service import Visibility
from processor.exceptions import ApplicationError, ConfigError, WorkflowNotFoundError
from processor.testing import WorkflowEnvironment


@workflow.defn
class Ticket:
    @workflow.run
    async def run(self, outcome: str) -> str:
        workflow.upsert_search_attributes({"Stage": "open"})
        await asyncio.sleep(60)
        if outcome == "fail":
            raise ApplicationError("customer gone", type="Gone", non_retryable=True)
        if outcome == "again":
            workflow.continue_as_new("ok")
        if outcome == "wait":
            await workflow.wait_condition(lambda: False)
        workflow.upsert_search_attributes({"Stage": "closed"})
        return f"done:{outcome}"


def project(env: WorkflowEnvironment, vis: Visibility, *, twice: bool = False) -> None:
    for partition, records in env.bus.events.items():
        for offset, (key, value) in enumerate(records):
            vis.apply(key, value, partition, offset)
            if twice:
                vis.apply(key, value, partition, offset)


@pytest.fixture
def projected() -> Any:
    with WorkflowEnvironment(workflows=[Ticket], partitions=2) as env:
        for i, (outcome, customer) in enumerate([("ok", "c1"), ("fail", "c1"), ("again", "c2"), ("wait", "c2"),
                                                 ("ok", "c3")]):
            env.start_workflow(Ticket.run, outcome, id=f"t-{i}", search_attributes={"CustomerId": customer,
                                                                                     "Priority": i})
        for i in (0, 1, 2, 4):
            try:
                env.result(f"t-{i}")
            except Exception:  # noqa: BLE001 - t-1 fails on purpose
                pass
        env.sleep(120)
        vis = Visibility(default_codec(), {}, {}, {})
        project(env, vis)
        yield env, vis


def test_lists_and_counts_follow_status_type_and_attributes(projected: Any) -> None:
    env, vis = projected
    assert vis.count_workflows() == {"count": 6, "by_status": {"Completed": 3, "Failed": 1, "ContinuedAsNew": 1,
                                                               "Running": 1}}
    listed = vis.list_workflows("CustomerId = 'c1' ORDER BY Priority")["workflows"]
    assert [(w["workflow_id"], w["status"]) for w in listed] == [("t-0", "Completed"), ("t-1", "Failed")]
    assert listed[0]["search_attributes"] == {"CustomerId": "c1", "Priority": 0, "Stage": "closed"}
    running = vis.list_workflows("ExecutionStatus = 'Running'")["workflows"]
    assert [(w["workflow_id"], w["search_attributes"]["Stage"]) for w in running] == [("t-3", "open")]
    chain = vis.list_workflows("WorkflowId = 't-2' ORDER BY StartTime")["workflows"]
    assert [w["status"] for w in chain] == ["ContinuedAsNew", "Completed"], "each run is a row"
    assert chain[1]["search_attributes"]["CustomerId"] == "c2", "carried into the next run"


def test_describe_shows_the_latest_run_its_result_failure_and_runs(projected: Any) -> None:
    env, vis = projected
    failed = vis.describe("t-1")
    assert failed["status"] == "Failed" and failed["failure"]["type"] == "Gone"
    assert failed["failure"]["message"] == "customer gone" and "stack_trace" in failed["failure"]
    done = vis.describe("t-2")
    assert done["result"] == {"encoding": "json/plain", "json": "done:ok"}
    assert [r["status"] for r in done["runs"]] == ["ContinuedAsNew", "Completed"]
    assert done["input"] == [{"encoding": "json/plain", "json": "ok"}]
    waiting = vis.describe("t-3")
    assert waiting["timers"] == {} and waiting["activities"] == {}
    with pytest.raises(WorkflowNotFoundError, match="no workflow with id 'nope'"):
        vis.describe("nope")


def test_history_is_the_runs_events_in_order_as_the_engine_wrote_them(projected: Any) -> None:
    env, vis = projected
    for wid in ("t-0", "t-1", "t-2", "t-3"):
        assert vis.history_of(wid) == env.history(wid)
    first_run = vis.describe("t-2")["runs"][0]["run_id"]
    assert vis.history_of("t-2", first_run)[-1]["type"] == "WorkflowContinuedAsNew"


def test_a_redelivered_log_changes_nothing(projected: Any) -> None:
    env, vis = projected
    again = Visibility(default_codec(), {}, {}, {})
    project(env, again, twice=True)
    assert again.runs == vis.runs and again.latest == vis.latest and again.history == vis.history
    assert again.progress.duplicates == again.progress.events > 0


def test_pages_walk_every_match_once(projected: Any) -> None:
    env, vis = projected
    seen, token = [], None
    while True:
        page = vis.list_workflows("ORDER BY WorkflowId", page_size=2, page_token=token)
        seen += [(w["workflow_id"], w["run_id"]) for w in page["workflows"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert len(seen) == len(set(seen)) == 6
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    with pytest.raises(ConfigError, match="page token"):
        vis.list_workflows(page_token="garbage")


def test_a_tombstone_removes_the_event_and_a_run_without_its_start_is_skipped(projected: Any) -> None:
    env, vis = projected
    (start, _), (second, _), *_ = [(k, v) for p in env.bus.events.values() for k, v in p if k.startswith(b"t-0@")]
    vis.apply(second, None, 0, 10_000, pruned=True)
    assert len(vis.history_of("t-0")) == len(env.history("t-0")) - 1
    fresh = Visibility(default_codec(), {}, {}, {})
    for p, records in env.bus.events.items():
        for offset, (k, v) in enumerate(records):
            if k != start:
                fresh.apply(k, v, p, offset)
    assert run_key("t-0", vis.latest["t-0"]) not in fresh.runs, "its WorkflowStarted is gone: no record"


def test_a_pruned_run_leaves_the_projection_but_a_handed_off_one_stays(projected: Any) -> None:
    from processor._engine.keys import event_key

    env, vis = projected
    pruned, moved = vis.describe("t-0"), vis.describe("t-4")
    for view, is_pruned in ((pruned, True), (moved, False)):
        for seq in range(1, view["history_length"] + 1):
            vis.apply(event_key(view["workflow_id"], view["run_id"], seq), None, 0, 10_000 + seq, pruned=is_pruned)
    with pytest.raises(WorkflowNotFoundError):
        vis.describe("t-0")
    assert "t-0" not in {w["workflow_id"] for w in vis.list_workflows(None)["workflows"]}
    assert vis.describe("t-4")["status"] == "Completed", "a hand-off's tombstones leave the row"
    assert len(vis.history_of("t-4")) == moved["history_length"], "... and the history"
    assert vis.progress.pruned == 1


def test_a_batch_gives_what_one_by_one_gives_and_writes_each_run_once() -> None:
    class Counting(dict[str, Any]):
        writes = 0

        def __setitem__(self, key: str, value: Any) -> None:
            Counting.writes += 1
            super().__setitem__(key, value)

    with WorkflowEnvironment(workflows=[Ticket], partitions=1) as env:
        for i in range(3):
            env.start_workflow(Ticket.run, "ok", id=f"b-{i}", search_attributes={"CustomerId": "c1"})
        env.sleep(120)
        records = [(k, v, 0, o, False) for o, (k, v) in enumerate(env.bus.events[0])]
        one = Visibility(default_codec(), {}, {}, {})
        for key, value, p, offset, pruned in records:
            one.apply(key, value, p, offset, pruned)
        runs = Counting()
        batched = Visibility(default_codec(), runs, {}, {})
        batched.apply_batch(records)
        batched.apply_batch(records)  # redelivered: nothing changes
    assert dict(runs) == one.runs and batched.history == one.history and batched.latest == one.latest
    assert Counting.writes == 3, "one write per run for the whole batch, none for the redelivery"


def test_lists_read_a_mirror_kept_by_the_writes_and_dropped_by_a_rebalance(projected: Any) -> None:
    env, vis = projected
    before = vis.count_workflows(None)["count"]
    reads = {"n": 0}

    class Watched(dict[str, Any]):
        def values(self) -> Any:
            reads["n"] += 1
            return super().values()

        def items(self) -> Any:
            reads["n"] += 1
            return super().items()

    vis.runs = Watched(vis.runs)
    vis._mirror = None
    epoch = {"n": 0}
    vis.epoch = lambda: epoch["n"]
    assert vis.count_workflows(None)["count"] == before and reads["n"] == 1, "built once"
    assert vis.count_workflows("ExecutionStatus = 'Running'")["count"] >= 1 and reads["n"] == 1, "then reused"
    env.start_workflow(Ticket.run, "ok", id="t-new")
    env.sleep(1)
    project(env, vis)  # every record again: the new run's are the only news
    assert vis.count_workflows(None)["count"] == before + 1 and reads["n"] == 1, "kept by apply"
    epoch["n"] += 1  # a rebalance: the owned partitions changed
    assert vis.count_workflows(None)["count"] == before + 1 and reads["n"] == 2, "rebuilt"
    epoch["n"] += 1  # the next rebalance starts; while it and the recovery last: read the table, keep nothing
    vis.steady = lambda: False
    vis.count_workflows(None)
    vis.count_workflows(None)
    assert reads["n"] == 4 and vis._mirror is None
