"""A workflow started and awaited by plain Kafka clients, using only docs/protocol.md and
schemas/: no durable-processor code encodes, partitions or decodes anything here."""

from __future__ import annotations

import io
import json
import time
import uuid

import fastavro
import pytest
from confluent_kafka import Consumer, Producer

from tests.dp_harness import REPO, Cluster

pytestmark = pytest.mark.integration

LOCK = json.loads((REPO / "schemas" / "fingerprints.lock").read_text())


def _latest(name: str) -> tuple[bytes, dict]:  # type: ignore[type-arg]
    entry = LOCK[name][-1]
    return bytes.fromhex(entry["fingerprint"]), fastavro.parse_schema(entry["schema"])


def encode(name: str, record: dict) -> bytes:  # type: ignore[type-arg]
    fingerprint, schema = _latest(name)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    return b"\xc3\x01" + fingerprint + body.getvalue()


def decode(value: bytes, name: str) -> dict:  # type: ignore[type-arg]
    assert value[:2] == b"\xc3\x01"
    fingerprint, schema = _latest(name)
    assert value[2:10] == fingerprint, "the value's fingerprint names the record in the type header"
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)  # type: ignore[return-value]


def test_start_and_read_completion_with_plain_kafka_clients(cluster: Cluster) -> None:
    cluster.processor()
    cluster.worker()
    commands, completions = f"{cluster.prefix}.commands", f"{cluster.prefix}.completions"
    wid = f"plain-{uuid.uuid4().hex[:8]}"
    start = {"workflow_id": wid, "workflow_type": "ThreeSteps",
             "args": [{"encoding": "json/plain", "data": b"41"}], "task_queue": "default",
             "execution_timeout_ms": None, "request_id": None}
    p = Producer({"bootstrap.servers": cluster.bootstrap, "partitioner": "murmur2_random",
                  "enable.idempotence": True})
    p.produce(commands, encode("wf.commands.v1.StartWorkflow", start), wid.encode(),
              headers=[("type", b"wf.commands.v1.StartWorkflow")])
    assert p.flush(30) == 0

    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"plain-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    c.subscribe([completions])
    found = None
    deadline = time.monotonic() + 60
    try:
        while found is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error() or m.key() != wid.encode():
                continue
            type_name = dict(m.headers())["type"].decode()
            found = (type_name, decode(m.value(), type_name))
    finally:
        c.close()
    assert found is not None, "no completion within 60s"
    type_name, record = found
    assert type_name == "wf.completions.v1.WorkflowCompleted"
    assert record["workflow_id"] == wid and record["workflow_type"] == "ThreeSteps"
    assert record["result"]["encoding"] == "json/plain"
    assert json.loads(record["result"]["data"]) == [42, 43, 44]
    assert record["close_time_ms"] > 0
