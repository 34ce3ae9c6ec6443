"""Tracing in the engine (processor/_tracing.py): with a tracer provider installed, a run joins
the trace of its start's traceparent header -- its workflow tasks, each activity dispatch and its
close are spans of that trace, linked as parent and child, and the traceparent travels on the task
and completion records and is kept in WorkflowStarted across a restart; a child's run joins its
parent's trace. With none, no span is made and no record carries a traceparent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import CMD, CODEC, COMPLETIONS, EngineHarness, encode_command
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from processor import _payload, _tracing

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.use(provider)
    yield exporter
    _tracing.use(None)


def _start_traced(h: EngineHarness, wid: str, workflow_type: str, *args: object) -> None:
    rec = {"workflow_id": wid, "workflow_type": workflow_type, "args": _payload.to_payloads(args)}
    headers = [*CODEC.headers(CMD + "StartWorkflow"), ("traceparent", PARENT.encode())]
    h.transaction([(h.partition_of(wid), wid.encode(), encode_command("StartWorkflow", rec), headers)])


def test_a_run_and_its_activities_are_one_trace(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    h = EngineHarness(tmp_path)
    _start_traced(h, "traced-1", "ThreeSteps", 1)
    assert h.events("traced-1")[0]["traceparent"] == PARENT
    tasks = [r for r in h.sink.records if r.header("type") == "wf.tasks.v1.ActivityTask"]
    h.close()
    h = EngineHarness(tmp_path)  # a restarted processor: the trace is read back from the state
    h.complete(tasks[0].decode()[1], 2)
    h.run_activities()
    assert h.result("traced-1") == [2, 3, 4]
    tasks = [r for r in h.sink.records if r.header("type") == "wf.tasks.v1.ActivityTask"] + tasks

    got = spans.get_finished_spans()
    names = [s.name for s in got]
    assert names.count("RunWorkflow:ThreeSteps") == 4  # the start and three results
    assert names.count("StartActivity:step") == 3 and names.count("CompleteWorkflow:ThreeSteps") == 1
    assert {format(s.context.trace_id, "032x") for s in got} == {TRACE}
    by_id = {s.context.span_id: s for s in got}
    for s in got:
        parent = by_id.get(s.parent.span_id) if s.parent else None
        if s.name.startswith("RunWorkflow"):
            assert s.parent is not None and format(s.parent.span_id, "016x") == "b7ad6b7169203331"
        else:  # dispatched and closed inside a workflow task
            assert parent is not None and parent.name == "RunWorkflow:ThreeSteps", s.name
        assert s.attributes["workflow_id"] == "traced-1"
    assert {s.attributes["activity_seq"] for s in got if s.name == "StartActivity:step"} == {1, 2, 3}
    dispatched = {format(s.context.span_id, "016x") for s in got if s.name == "StartActivity:step"}
    carried = {r.header("traceparent").split("-")[2] for r in tasks}  # type: ignore[union-attr]
    assert carried == dispatched  # each task names its StartActivity span: the worker's parent
    [done] = h.records(COMPLETIONS)
    assert done.header("traceparent").split("-")[1] == TRACE  # type: ignore[union-attr]


def test_an_untraced_start_gets_a_trace_of_its_own(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    h = EngineHarness(tmp_path)
    h.start("plain-1", "ThreeSteps", 1)
    h.run_activities()
    got = spans.get_finished_spans()
    [root] = [s for s in got if s.name == "StartWorkflow:ThreeSteps"]
    assert root.parent is None
    assert {s.context.trace_id for s in got} == {root.context.trace_id}
    assert h.events("plain-1")[0]["traceparent"].split("-")[1] == format(root.context.trace_id, "032x")


def test_a_child_joins_its_parents_trace(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    h = EngineHarness(tmp_path)
    _start_traced(h, "parent-1", "Parent", 2)
    h.pump()
    child_runs = {s.attributes["workflow_id"] for s in spans.get_finished_spans()
                  if s.name.startswith("RunWorkflow:Child")}
    assert child_runs
    assert {format(s.context.trace_id, "032x") for s in spans.get_finished_spans()} == {TRACE}


def test_no_provider_no_spans_no_headers(tmp_path: Path) -> None:
    assert _tracing.tracer() is None
    h = EngineHarness(tmp_path)
    h.start("quiet-1", "ThreeSteps", 1)
    h.run_activities()
    assert h.events("quiet-1")[0]["traceparent"] is None
    assert not any(r.header("traceparent") for r in h.sink.records)


def test_a_continue_as_new_keeps_both_tasks_spans(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    """The next run's first task runs inside the task that continued as new: both spans end."""
    h = EngineHarness(tmp_path)
    _start_traced(h, "loop-1", "Looper", 0, 2, 1, 0, [])
    first_run = h.run_of("loop-1")
    h.signal("loop-1", "bump")  # count 1 of 2: continues as new
    second_run = h.run_of("loop-1")
    assert second_run != first_run
    h.signal("loop-1", "bump")
    runs = [s.attributes["run_id"] for s in spans.get_finished_spans() if s.name == "RunWorkflow:Looper"]
    assert runs.count(first_run) == 2, "its start and the task that continued as new"
    assert runs.count(second_run) == 2, "its first task and the one that completed it"
    assert {format(s.context.trace_id, "032x") for s in spans.get_finished_spans()} == {TRACE}
    done = [s for s in spans.get_finished_spans() if s.name == "CompleteWorkflow:Looper"]
    assert [s.attributes["status"] for s in done] == ["continued_as_new", "completed"]
