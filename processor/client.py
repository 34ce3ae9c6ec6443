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
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processor._codec import default_codec
from processor._codec.partitioner import partition_for
from processor._engine.keys import split_event_key
from processor._engine.state import Summary, fold
from processor._failure import exception_from_failure
from processor._kafka.messages import consume_available, high_watermarks
from processor._kafka.topics import DEFAULT_PREFIX, TopicNames
from processor._limits import PRODUCER_MESSAGE_MAX_BYTES, check_size, too_large
from processor._names import task_queue_problem
from processor._payload import from_payload, to_payloads
from processor.exceptions import (
    ConfigError,
    KafkaUnavailableError,
    PayloadTooLargeError,
    ProcessorError,
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


def _outcome(workflow_id: str, completion: tuple[str, dict[str, Any]], result_type: object) -> Any:
    """The workflow's result, or the WorkflowFailureError its completion stands for."""
    kind, rec = completion
    if kind == "WorkflowCompleted":
        return from_payload(rec["result"], result_type)
    status = _CLOSED[kind]
    if kind == "WorkflowFailed":
        cause = exception_from_failure(rec["failure"])
        raise WorkflowFailureError(workflow_id, status, str(cause)) from cause
    raise WorkflowFailureError(workflow_id, status, rec.get("reason") or "")


def history_events(workflow_id: str, records: Iterable[tuple[bytes | None, bytes | None]],
                   decode: Callable[[bytes], dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of exactly `workflow_id` among (key, value) records of wf.events, in seq order.

    Exact, not by key prefix: `col2` and `col2@000000000001` share a partition and a prefix, and
    a prefix match gave one the other's history. The key is parsed (id before the last '@', seq
    after it) and the id compared whole; the decoded event must name the same workflow too.
    """
    events: dict[int, dict[str, Any]] = {}
    for key, value in records:
        parsed = split_event_key(key or b"")
        if value is None or parsed is None or parsed[0] != workflow_id:
            continue
        ev = decode(value)
        if ev.get("workflow_id") == workflow_id:
            events[ev["seq"]] = ev
    return [events[s] for s in sorted(events)]


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What `describe` shows, from a history already read: the processors' own fold of it."""
    summary: Summary | None = None
    for ev in events:
        summary = fold(summary, ev)
    assert summary is not None, "an empty history has no summary"
    out = summary.describe()
    out["history_length"] = len(events)
    return out


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
        self.callbacks: dict[str, list[Callable[[tuple[str, dict[str, Any]]], None]]] = {}
        self.lock = threading.Lock()
        self._watched: set[int] = set()
        self._add: list[int] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="completions", daemon=True)
        self._thread.start()

    def watch(self, workflow_id: str) -> None:
        p = partition_for(workflow_id.encode(), self.partitions)
        with self.lock:
            if p not in self._watched:
                self._watched.add(p)
                self._add.append(p)

    def _run(self) -> None:
        while not self._stop:
            with self.lock:
                add, self._add = self._add, []
            if add:
                self.consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in add])
            if not self._watched:
                time.sleep(0.02)
                continue
            msgs = consume_available(self.consumer, 500, 0.05)
            got = []
            for m in msgs:
                value = m.value()
                if m.error() is not None or value is None:
                    continue
                name, rec = self.codec.decode(value)
                got.append((rec["workflow_id"], name.rpartition(".")[2], rec))
            if got:
                fire: list[tuple[Callable[[tuple[str, dict[str, Any]]], None], tuple[str, dict[str, Any]]]] = []
                with self.lock:
                    for wid, kind, rec in got:
                        self.results[wid] = (kind, rec)
                        fire.extend((fn, (kind, rec)) for fn in self.callbacks.pop(wid, ()))
                for fn, res in fire:
                    fn(res)

    def on_result(self, workflow_id: str, fn: Callable[[tuple[str, dict[str, Any]]], None]) -> None:
        """Call `fn(completion)` from the watcher thread once `workflow_id` completes (now, if it has)."""
        self.watch(workflow_id)
        with self.lock:
            ready = self.results.get(workflow_id)
            if ready is None:
                self.callbacks.setdefault(workflow_id, []).append(fn)
        if ready is not None:
            fn(ready)

    def wait(self, workflow_id: str, timeout: float | None) -> tuple[str, dict[str, Any]]:
        """Block until the completion arrives: `on_result` with an Event."""
        done = threading.Event()
        box: list[tuple[str, dict[str, Any]]] = []

        def arrived(res: tuple[str, dict[str, Any]]) -> None:
            box.append(res)
            done.set()

        self.on_result(workflow_id, arrived)
        if not done.wait(timeout):
            with self.lock:
                waiting = self.callbacks.get(workflow_id, [])
                if arrived in waiting:
                    waiting.remove(arrived)
            if not box:
                raise TimeoutError(f"workflow {workflow_id!r} did not complete within {timeout}s")
        return box[0]

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
                                  "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES, "partitioner": "murmur2_random",
                                  "client.id": "processor-client"})
        self._watcher: _CompletionWatcher | None = None
        self._watcher_lock = threading.Lock()
        # One thread serves delivery reports, so senders wait on an Event instead of each
        # busy-polling the producer (which starves other threads of the GIL under concurrency).
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_deliveries, name="client-deliveries", daemon=True)
        self._poller.start()

    def _poll_deliveries(self) -> None:
        while not self._closed.is_set():
            self.producer.poll(0.05)

    # -- commands -------------------------------------------------------------------------------

    def _produce(self, short_name: str, workflow_id: str, rec: dict[str, Any],
                 on_ack: Callable[[KafkaError | None], None] | None) -> None:
        """Encode and enqueue one command; `on_ack(error)` runs on the delivery thread.

        Every command (sync and async client, start, signal, cancel, terminate) passes here, so
        this is where the size is checked: an oversized command raises PayloadTooLargeError
        before anything is sent, instead of librdkafka's raw error (or the processor's DLQ).
        """
        key = _check_id(workflow_id)
        name = "wf.commands.v1." + short_name
        what = f"the {short_name} command of workflow {workflow_id!r}"
        value = check_size(what, self.codec.encode(name, {"workflow_id": workflow_id, **rec}))
        callback = (lambda err, _m: on_ack(err)) if on_ack is not None else None
        while True:
            try:
                self.producer.produce(self.topics.commands, value, key, headers=cast(Any, self.codec.headers(name)),
                                      on_delivery=callback)
                return
            except BufferError:
                time.sleep(0.01)  # local queue full: the delivery thread is draining it
            except KafkaException as exc:  # refused locally; vendor errors do not reach users
                err = exc.args[0]
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise PayloadTooLargeError(too_large(f"{what} (with its key)", len(value) + len(key),
                                                         PRODUCER_MESSAGE_MAX_BYTES)) from None
                raise KafkaUnavailableError(f"{short_name} for {workflow_id!r} was not sent: {err}") from None

    def _send(self, short_name: str, workflow_id: str, rec: dict[str, Any], wait: bool = True) -> None:
        if not wait:
            self._produce(short_name, workflow_id, rec, None)
            return
        errors: list[KafkaError] = []
        acknowledged = threading.Event()

        def acked(err: KafkaError | None) -> None:
            if err is not None:
                errors.append(err)
            acknowledged.set()

        self._produce(short_name, workflow_id, rec, acked)
        if not acknowledged.wait(30):
            # What the engine does with a repeat (processor/_engine/engine.py): a start of an
            # existing id is a no-op, a cancel or terminate already applied changes nothing, but a
            # signal is applied again (its request_id is recorded, not de-duplicated).
            resend = {
                "StartWorkflow": "resending is safe: starts are idempotent by workflow id (a second start of "
                                 "the same id is the same run)",
                "CancelWorkflow": "resending is safe: a repeated cancel changes nothing",
                "TerminateWorkflow": "resending is safe: a repeated terminate changes nothing",
            }.get(short_name, "resending may deliver it twice: signals are not de-duplicated, so check the "
                              "workflow's history first")
            raise KafkaUnavailableError(
                f"{short_name} for {workflow_id!r} was not acknowledged by Kafka within 30s; it may still arrive "
                f"(the client keeps trying until it is closed); {resend}"
            )
        if errors:
            raise _not_delivered(short_name, workflow_id, errors[0])

    def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                       task_queue: str = "default", execution_timeout: timedelta | float | None = None,
                       wait_for_ack: bool = True) -> WorkflowHandle:
        """Start a workflow; idempotent by id (a second start of the same id is the same run)."""
        self._send("StartWorkflow", id, self.start_record(workflow, args, task_queue, execution_timeout),
                   wait_for_ack)
        return WorkflowHandle(self, id)

    @staticmethod
    def start_record(workflow: type | Callable[..., Any] | str, args: tuple[Any, ...], task_queue: str,
                      execution_timeout: timedelta | float | None) -> dict[str, Any]:
        if (problem := task_queue_problem(task_queue)) is not None:
            raise ConfigError(problem)
        return {"workflow_type": _workflow_type(workflow), "args": to_payloads(args), "task_queue": task_queue,
                "execution_timeout_ms": _ms(execution_timeout), "request_id": uuid.uuid4().hex}

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
        return _outcome(workflow_id, self.completion(workflow_id, timeout), result_type)

    def on_result(self, workflow_id: str, fn: Callable[[tuple[str, dict[str, Any]]], None]) -> None:
        """Call `fn(completion)` on the client's reader thread once the workflow has closed."""
        self._completions().on_result(workflow_id, fn)

    def history(self, workflow_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Every event of the workflow, in order, read from the events topic."""
        _check_id(workflow_id)
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"client-{uuid.uuid4().hex}",
                             "isolation.level": "read_committed", "enable.auto.commit": False})

        def records(tp: TopicPartition, high: int) -> Iterator[tuple[bytes | None, bytes | None]]:
            consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)])
            deadline = time.monotonic() + timeout
            while consumer.position([tp])[0].offset < high:
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(f"reading history of {workflow_id!r} timed out")
                yield from ((m.key(), m.value()) for m in consumer.consume(1000, timeout=0.2) if m.error() is None)

        try:
            md = consumer.list_topics(self.topics.events, timeout=timeout)
            p = partition_for(workflow_id.encode(), len(md.topics[self.topics.events].partitions))
            tp = TopicPartition(self.topics.events, p)
            high = high_watermarks(self.bootstrap, [tp], timeout)[p]
            if high == 0:
                return []
            return history_events(workflow_id, records(tp, high), self.codec.decode_typed)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"reading history of {workflow_id!r} failed: {exc.args[0]}") from exc
        finally:
            consumer.close()

    def describe(self, workflow_id: str) -> dict[str, Any]:
        events = self.history(workflow_id)
        if not events:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return summarize(events)

    def close(self) -> None:
        self.producer.flush(10)
        self._closed.set()
        self._poller.join(5)
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
    """The client for asyncio code. Waiting costs no thread: acknowledgements and completions
    resolve futures from the client's own reader threads, so thousands of concurrent
    `await client.result(...)` are cheap."""

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.sync = Client(bootstrap, prefix=prefix)

    async def _command(self, short_name: str, workflow_id: str, rec: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def acked(err: KafkaError | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, err, short_name, workflow_id)

        self.sync._produce(short_name, workflow_id, rec, acked)  # noqa: SLF001 - the async face of the same client
        await asyncio.wait_for(fut, 30)

    async def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                             task_queue: str = "default", execution_timeout: timedelta | float | None = None) -> str:
        await self._command("StartWorkflow", id, Client.start_record(workflow, args, task_queue, execution_timeout))
        return id

    async def signal(self, workflow_id: str, signal_name: str, *args: Any) -> None:
        await self._command("SignalWorkflow", workflow_id, {"signal_name": signal_name, "args": to_payloads(args),
                                                            "request_id": uuid.uuid4().hex})

    async def cancel(self, workflow_id: str, reason: str = "") -> None:
        await self._command("CancelWorkflow", workflow_id, {"reason": reason})

    async def terminate(self, workflow_id: str, reason: str = "") -> None:
        await self._command("TerminateWorkflow", workflow_id, {"reason": reason})

    async def result(self, workflow_id: str, timeout: float | None = None,  # noqa: ASYNC109 - mirrors Client
                     result_type: object = None) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[str, dict[str, Any]]] = loop.create_future()
        def arrived(res: tuple[str, dict[str, Any]]) -> None:
            loop.call_soon_threadsafe(_resolve, fut, res)

        self.sync.on_result(workflow_id, arrived)
        try:
            completion = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(f"workflow {workflow_id!r} did not complete within {timeout}s") from None
        return _outcome(workflow_id, completion, result_type)

    async def describe(self, workflow_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.describe, workflow_id)

    async def history(self, workflow_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.history, workflow_id)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)


def _settle(fut: asyncio.Future[None], err: KafkaError | None, short_name: str, workflow_id: str) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(_not_delivered(short_name, workflow_id, err))


def _not_delivered(short_name: str, workflow_id: str, err: KafkaError) -> ProcessorError:
    """A delivery error as one of ours: a broker whose record limit is below ours says so."""
    if err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
        return PayloadTooLargeError(f"the {short_name} command of workflow {workflow_id!r} was refused by the broker "
                                    f"as too large ({err}): set DP_MAX_RECORD_BYTES below the broker's / topic's "
                                    "max.message.bytes, or pass large data by reference")
    return KafkaUnavailableError(f"{short_name} for {workflow_id!r} failed: {err}")


def _resolve(fut: asyncio.Future[tuple[str, dict[str, Any]]], res: tuple[str, dict[str, Any]]) -> None:
    if not fut.done():
        fut.set_result(res)
