"""Tracing across real processes (issue 10 item 6): the client's StartWorkflow span, and the
processor's and worker's spans exported over OTLP/HTTP to a receiver in this test, make one
trace for a 3-activity workflow: RunWorkflow per workflow task, StartActivity per dispatch, the
worker's RunActivity under each, and CompleteWorkflow."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from processor import _tracing
from processor.client import Client
from tests.dp_harness import Cluster, wait_for

pytestmark = pytest.mark.integration


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver keeping every span it is sent, with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for rs in request.resource_spans:
                service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                self.server.spans += [(service, s) for ss in rs.scope_spans for s in ss.spans]
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    threading.Thread(target=r.serve_forever, daemon=True).start()
    yield r
    r.shutdown()


def test_one_trace_from_the_client_through_processor_and_worker(kafka_bootstrap: str, prefix: str, tmp_path: Path,
                                                                 receiver: Receiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=2, env=env)
    mine = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mine))
    _tracing.use(provider)
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        c.processor(0)
        c.worker(0)
        client.start_workflow("ThreeSteps", 10, id="traced-e2e")
        assert client.result("traced-e2e", timeout=120) == [11, 12, 13]
        [root] = mine.get_finished_spans()
        assert root.name == "StartWorkflow:ThreeSteps" and root.attributes["workflow_id"] == "traced-e2e"
        trace_id = root.context.trace_id.to_bytes(16, "big")

        def names() -> list[str]:
            with receiver.lock:
                return [s.name for _, s in receiver.spans if s.trace_id == trace_id]

        wait_for(lambda: names().count("RunActivity:step") == 3 and "CompleteWorkflow:ThreeSteps" in names(), 60,
                 interval=0.2, message="the processor's and worker's spans exported")
        with receiver.lock:
            got = list(receiver.spans)
        assert {s.trace_id for _, s in got} == {trace_id}, "every exported span is of the client's trace"
        assert sorted(names()) == sorted(["RunWorkflow:ThreeSteps"] * 4 + ["StartActivity:step"] * 3
                                         + ["RunActivity:step"] * 3 + ["CompleteWorkflow:ThreeSteps"])
        services = {s.name.split(":")[0]: svc for svc, s in got}
        processor, worker = "durable-processor-processor", "durable-processor-worker"
        assert services == {"RunWorkflow": processor, "StartActivity": processor, "CompleteWorkflow": processor,
                            "RunActivity": worker}
        by_id = {s.span_id: s for _, s in got}
        root_id = root.context.span_id.to_bytes(8, "big")
        for _, s in got:
            if s.name.startswith("RunWorkflow"):
                assert s.parent_span_id == root_id
            elif s.name.startswith("RunActivity"):
                parent = by_id[s.parent_span_id]
                assert parent.name == "StartActivity:step"
                seq = {a.key: a.value.int_value for a in s.attributes}["activity_seq"]
                assert {a.key: a.value.int_value for a in parent.attributes}["activity_seq"] == seq
            else:
                assert by_id[s.parent_span_id].name == "RunWorkflow:ThreeSteps"
    finally:
        _tracing.use(None)
        client.close()
        c.close()
