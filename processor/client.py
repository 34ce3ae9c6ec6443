"""The Python client: start, signal, cancel, terminate, result, describe, history -- Kafka only.

Commands are produced with an idempotent producer and the murmur2 partitioner (Kafka's Java
default), so they land where any other Kafka client would put them. Results are read from the
completions topic: the client reads the one partition that holds an id's completion, from the
beginning, and remembers every completion it sees there.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processor._codec import default_codec
from processor._codec.partitioner import partition_for
from processor._engine.state import Summary, fold
from processor._failure import exception_from_failure
from processor._kafka.topics import DEFAULT_PREFIX, TopicNames
from processor._payload import from_payload, to_payloads
from processor.exceptions import (
    ConfigError,
    KafkaUnavailableError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from processor.workflow import WorkflowDefinition

__all__ = ["AsyncClient", "Client", "WorkflowHandle"]

_CLOSED = {
    "WorkflowCompleted": "completed", "WorkflowFailed": "failed", "WorkflowCanceled": "canceled",
    "WorkflowTerminated": "terminated", "WorkflowTimedOut": "timed out",
}


def _workflow_type(workflow: object) -> str:
    if isinstance(workflow, str):
        if not workflow:
            raise ConfigError("workflow type name must not be empty")
        return workflow
    if isinstance(workflow, type):
        return WorkflowDefinition.of(workflow).name
    owner = getattr(workflow, "__qualname__", "").rpartition(".")[0]
    module = getattr(workflow, "__module__", None)
    if owner and module:
        import sys

        cls = getattr(sys.modules[module], owner, None)
        if isinstance(cls, type):
            return WorkflowDefinition.of(cls).name
    raise ConfigError(
        f"start_workflow needs a workflow class, its run method (MyWorkflow.run) or a type name; got {workflow!r}"
    )


def _check_id(workflow_id: str) -> bytes:
    if not isinstance(workflow_id, str) or not workflow_id or "\x00" in workflow_id:
        raise ConfigError(f"workflow id must be a non-empty string without NUL characters; got {workflow_id!r}")
    return workflow_id.encode()


def _ms(value: timedelta | float | None) -> int | None:
    if value is None:
        return None
    return int((value.total_seconds() if isinstance(value, timedelta) else value) * 1000)


class _CompletionWatcher:
    """Background reader of the completion partitions that someone asked about."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"client-{uuid.uuid4().hex}",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 10})
        md = self.consumer.list_topics(topic, timeout=30)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise KafkaUnavailableError(f"topic {topic} does not exist: run `processor topics create` first")
        self.partitions = len(md.topics[topic].partitions)
        self.codec = default_codec()
        self.results: dict[str, tuple[str, dict[str, Any]]] = {}
        self.cond = threading.Condition()
        self._watched: set[int] = set()
        self._add: list[int] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="completions", daemon=True)
        self._thread.start()

    def watch(self, workflow_id: str) -> None:
        p = partition_for(workflow_id.encode(), self.partitions)
        with self.cond:
            if p not in self._watched:
                self._watched.add(p)
                self._add.append(p)

    def _run(self) -> None:
        while not self._stop:
            with self.cond:
                add, self._add = self._add, []
            if add:
                self.consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in add])
            if not self._watched:
                time.sleep(0.02)
                continue
            msgs = self.consumer.consume(500, timeout=0.05)
            got = []
            for m in msgs:
                value = m.value()
                if m.error() is not None or value is None:
                    continue
                name, rec = self.codec.decode(value)
                got.append((rec["workflow_id"], name.rpartition(".")[2], rec))
            if got:
                with self.cond:
                    for wid, kind, rec in got:
                        self.results[wid] = (kind, rec)
                    self.cond.notify_all()

    def wait(self, workflow_id: str, timeout: float | None) -> tuple[str, dict[str, Any]]:
        self.watch(workflow_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while workflow_id not in self.results:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"workflow {workflow_id!r} did not complete within {timeout}s")
                self.cond.wait(remaining if remaining is not None else 1.0)
            return self.results[workflow_id]

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.consumer.close()


class Client:
    """Talks only to Kafka. Thread-safe; one per process is enough."""

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.bootstrap = bootstrap
        self.topics = TopicNames(prefix)
        self.codec = default_codec()
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1,
                                  "partitioner": "murmur2_random", "client.id": "processor-client"})
        self._watcher: _CompletionWatcher | None = None
        self._watcher_lock = threading.Lock()

    # -- commands -------------------------------------------------------------------------------

    def _send(self, short_name: str, workflow_id: str, rec: dict[str, Any], wait: bool = True) -> None:
        key = _check_id(workflow_id)
        name = "wf.commands.v1." + short_name
        value = self.codec.encode(name, {"workflow_id": workflow_id, **rec})
        errors: list[KafkaError] = []

        def acked(err: KafkaError | None, _m: Message) -> None:
            if err is not None:
                errors.append(err)

        while True:
            try:
                self.producer.produce(self.topics.commands, value, key, headers=cast(Any, self.codec.headers(name)),
                                      on_delivery=acked)
                break
            except BufferError:
                self.producer.poll(0.05)
        if wait:
            if self.producer.flush(30) != 0:
                raise KafkaUnavailableError(f"{short_name} for {workflow_id!r} was not acknowledged within 30s")
            if errors:
                raise KafkaUnavailableError(f"{short_name} for {workflow_id!r} failed: {errors[0]}")
        else:
            self.producer.poll(0)

    def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                       task_queue: str = "default", execution_timeout: timedelta | float | None = None,
                       wait_for_ack: bool = True) -> WorkflowHandle:
        """Start a workflow; idempotent by id (a second start of the same id is the same run)."""
        self._send("StartWorkflow", id, {
            "workflow_type": _workflow_type(workflow), "args": to_payloads(args), "task_queue": task_queue,
            "execution_timeout_ms": _ms(execution_timeout), "request_id": uuid.uuid4().hex}, wait_for_ack)
        return WorkflowHandle(self, id)

    def flush(self, timeout: float = 30) -> None:
        if self.producer.flush(timeout) != 0:
            raise KafkaUnavailableError(f"commands not acknowledged within {timeout}s")

    def signal(self, workflow_id: str, signal_name: str, *args: Any) -> None:
        self._send("SignalWorkflow", workflow_id, {"signal_name": signal_name, "args": to_payloads(args),
                                                    "request_id": uuid.uuid4().hex})

    def cancel(self, workflow_id: str, reason: str = "") -> None:
        self._send("CancelWorkflow", workflow_id, {"reason": reason})

    def terminate(self, workflow_id: str, reason: str = "") -> None:
        self._send("TerminateWorkflow", workflow_id, {"reason": reason})

    def get_handle(self, workflow_id: str) -> WorkflowHandle:
        _check_id(workflow_id)
        return WorkflowHandle(self, workflow_id)

    # -- reads ----------------------------------------------------------------------------------

    def _completions(self) -> _CompletionWatcher:
        with self._watcher_lock:
            if self._watcher is None:
                self._watcher = _CompletionWatcher(self.bootstrap, self.topics.completions)
            return self._watcher

    def watch(self, workflow_id: str) -> None:
        """Start reading the partition of `workflow_id`'s completion now (result() does it too)."""
        self._completions().watch(workflow_id)

    def completion(self, workflow_id: str, timeout: float | None = None) -> tuple[str, dict[str, Any]]:
        """The raw completion record: (record short name, fields)."""
        return self._completions().wait(workflow_id, timeout)

    def result(self, workflow_id: str, timeout: float | None = None, result_type: object = None) -> Any:
        kind, rec = self.completion(workflow_id, timeout)
        if kind == "WorkflowCompleted":
            return from_payload(rec["result"], result_type)
        status = _CLOSED[kind]
        if kind == "WorkflowFailed":
            cause = exception_from_failure(rec["failure"])
            raise WorkflowFailureError(workflow_id, status, str(cause)) from cause
        raise WorkflowFailureError(workflow_id, status, rec.get("reason") or "")

    def history(self, workflow_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Every event of the workflow, in order, read from the events topic."""
        key_prefix = _check_id(workflow_id) + b"@"
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"client-{uuid.uuid4().hex}",
                             "isolation.level": "read_committed", "enable.auto.commit": False})
        try:
            md = consumer.list_topics(self.topics.events, timeout=timeout)
            p = partition_for(workflow_id.encode(), len(md.topics[self.topics.events].partitions))
            tp = TopicPartition(self.topics.events, p)
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            events: dict[int, dict[str, Any]] = {}
            if high > 0:
                consumer.assign([TopicPartition(self.topics.events, p, OFFSET_BEGINNING)])
                deadline = time.monotonic() + timeout
                while consumer.position([tp])[0].offset < high:
                    if time.monotonic() > deadline:
                        raise KafkaUnavailableError(f"reading history of {workflow_id!r} timed out")
                    for m in consumer.consume(1000, timeout=0.2):
                        value, key = m.value(), m.key() or b""
                        if m.error() is None and value is not None and key.startswith(key_prefix):
                            name, ev = self.codec.decode(value)
                            ev["type"] = name.rpartition(".")[2]
                            events[ev["seq"]] = ev
            return [events[s] for s in sorted(events)]
        except KafkaException as exc:
            raise KafkaUnavailableError(f"reading history of {workflow_id!r} failed: {exc.args[0]}") from exc
        finally:
            consumer.close()

    def describe(self, workflow_id: str) -> dict[str, Any]:
        events = self.history(workflow_id)
        if not events:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        summary: Summary | None = None
        for ev in events:
            summary = fold(summary, ev)
        assert summary is not None
        out = summary.describe()
        out["history_length"] = len(events)
        return out

    def close(self) -> None:
        self.producer.flush(10)
        if self._watcher is not None:
            self._watcher.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkflowHandle:
    def __init__(self, client: Client, workflow_id: str) -> None:
        self.client = client
        self.id = workflow_id

    def result(self, timeout: float | None = None, result_type: object = None) -> Any:
        return self.client.result(self.id, timeout, result_type)

    def signal(self, signal_name: str, *args: Any) -> None:
        self.client.signal(self.id, signal_name, *args)

    def cancel(self, reason: str = "") -> None:
        self.client.cancel(self.id, reason)

    def terminate(self, reason: str = "") -> None:
        self.client.terminate(self.id, reason)

    def describe(self) -> dict[str, Any]:
        return self.client.describe(self.id)

    def history(self) -> list[dict[str, Any]]:
        return self.client.history(self.id)

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.id!r})"


class AsyncClient:
    """The same client for asyncio code: blocking Kafka calls run in a thread."""

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.sync = Client(bootstrap, prefix=prefix)

    async def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                             task_queue: str = "default", execution_timeout: timedelta | float | None = None) -> str:
        await asyncio.to_thread(self.sync.start_workflow, workflow, *args, id=id, task_queue=task_queue,
                                execution_timeout=execution_timeout)
        return id

    async def signal(self, workflow_id: str, signal_name: str, *args: Any) -> None:
        await asyncio.to_thread(self.sync.signal, workflow_id, signal_name, *args)

    async def cancel(self, workflow_id: str, reason: str = "") -> None:
        await asyncio.to_thread(self.sync.cancel, workflow_id, reason)

    async def terminate(self, workflow_id: str, reason: str = "") -> None:
        await asyncio.to_thread(self.sync.terminate, workflow_id, reason)

    async def result(self, workflow_id: str, timeout: float | None = None,  # noqa: ASYNC109 - mirrors Client
                     result_type: object = None) -> Any:
        return await asyncio.to_thread(self.sync.result, workflow_id, timeout, result_type)

    async def describe(self, workflow_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.describe, workflow_id)

    async def history(self, workflow_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.history, workflow_id)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)
