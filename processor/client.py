"""The Python client: start, signal, cancel, terminate, result, describe, history -- Kafka only.

Commands are produced with an idempotent producer and the murmur2 partitioner (Kafka's Java
default), so they land where any other Kafka client would put them. A command that wants an
answer (a start: which run; a signal: delivered or why not) asks for a CommandReply on the
client's own partition of the replies topic. What the client reads -- results, histories,
summaries, lists -- is _client_reads.py: results from the completions topic, read from where the
id's partition ended when the client first looked (processor/_watcher.py), and from the owning
processor for a run that closed before that.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from processor import _tracing, payloads
from processor._answers import (
    _answer,
    _no_update_reply,
    _refusal,
    _update_outcome,
    _update_record,
)
from processor._client_reads import Reads
from processor._codec import default_codec
from processor._engine.runs import ALLOW_DUPLICATE, REFUSED, USE_EXISTING, policy_problem
from processor._kafka.config import client_config
from processor._kafka.topics import DEFAULT_PREFIX, TopicNames
from processor._limits import PRODUCER_MESSAGE_MAX_BYTES, check_size, too_large
from processor._names import task_queue_problem
from processor._payload import to_payloads
from processor._search import encode_attributes, encode_memo
from processor._watcher import Reply, Watcher
from processor.exceptions import (
    ConfigError,
    KafkaUnavailableError,
    NoReplyError,
    PayloadTooLargeError,
    ProcessorError,
)
from processor.schedule import Schedules
from processor.workflow import WorkflowDefinition

__all__ = ["AsyncClient", "AsyncWorkflowHandle", "Client", "WorkflowHandle"]

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


# librdkafka's own lines, errors only: its transient warnings right after a broker starts (e.g.
# "Coordinator load in progress: retrying") are noise to a user of the client. (Not a Python
# `logger`: its log events would count in len(producer) until served.)
CLIENT_LOGGING: dict[str, Any] = {"log_level": 3}

REPLY_TIMEOUT_S = 60.0  # how long a command waits for its processor's answer by default
STARTS_KEPT = 10_000  # starts a client remembers (for result() without a run id); see _remember


class _Start:
    """What this client knows of its latest start of one id: filled in when the reply arrives."""

    def __init__(self) -> None:
        self.replied = threading.Event()
        self.reply: Reply | None = None
        self._then: list[Callable[[Reply], None]] = []
        self._lock = threading.Lock()

    def arrived(self, reply: Reply) -> None:
        with self._lock:
            self.reply = reply
            self.replied.set()
            then, self._then = self._then, []
        for fn in then:
            fn(reply)

    def then(self, fn: Callable[[Reply], None]) -> None:
        """Call `fn(reply)` once the reply is here (now, if it is)."""
        with self._lock:
            if not self.replied.is_set():
                self._then.append(fn)
                return
        assert self.reply is not None
        fn(self.reply)


class Client(Reads, Schedules):
    """Talks only to Kafka. Thread-safe; one per process is enough."""

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX, visibility_url: str | None = None) -> None:
        """`visibility_url`: the visibility service (`processor ui`) that list_workflows and
        count_workflows ask; default DP_VISIBILITY_URL, else http://127.0.0.1:8233."""
        self.bootstrap = bootstrap
        self.visibility_url = visibility_url
        self.topics = TopicNames(prefix)
        self.codec = default_codec()
        payloads.chain()  # a bad DP_PAYLOAD_* setting is a ConfigError here, not at the first payload
        self.producer = Producer(client_config(
            "producer", bootstrap, "client",
            # a growth of the topics is seen within seconds (engine/growth.py)
            {"linger.ms": 1, "topic.metadata.refresh.interval.ms": 10_000, **CLIENT_LOGGING},
            fixed={"enable.idempotence": True, "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES,
                   "partitioner": "murmur2_random"}))
        self._watcher: Watcher | None = None
        self._watcher_lock = threading.Lock()
        # workflow id -> this client's latest start of it; the last STARTS_KEPT only (a start that
        # fell out is answered like any other run: result() asks the processor).
        self._starts: OrderedDict[str, _Start] = OrderedDict()
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
        headers = self.codec.headers(name)
        span = None
        if short_name == "StartWorkflow":
            t = _tracing.tracer()
            if t is not None:  # the run's trace starts here, under the caller's current span if any
                span = _tracing.start(t, f"StartWorkflow:{rec['workflow_type']}", None, {
                    "workflow_id": workflow_id, "task_queue": rec.get("task_queue")}, kind="PRODUCER")
                headers = [*headers, _tracing.header(span)]
        while True:
            try:
                self.producer.produce(self.topics.commands, value, key, headers=cast(Any, headers),
                                      on_delivery=callback)
                if span is not None:
                    span.end()
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
                "StartWorkflow": "resending with the same request_id is safe: it attaches to the run this one "
                                 "started",
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

    def _check(self, short_name: str, workflow_id: str, rec: dict[str, Any]) -> None:
        """What _produce refuses, checked before anything else is set up: the id, and the size
        with the largest reply_partition (its varint is at most 5 bytes)."""
        _check_id(workflow_id)
        what = f"the {short_name} command of workflow {workflow_id!r}"
        check_size(what, self.codec.encode("wf.commands.v1." + short_name,
                                           {"workflow_id": workflow_id, **rec, "reply_partition": 2**31 - 1}))

    def _ask(self, short_name: str, workflow_id: str, rec: dict[str, Any], timeout: float,
             late: Callable[[Reply], None] | None = None) -> Reply:
        """Send a command that asks for a reply, and wait for the reply. `late` gets a reply that
        comes after the wait gave up (NoReplyError)."""
        self._check(short_name, workflow_id, rec)
        watcher = self._completions()
        request_id = rec["request_id"]
        rec["reply_partition"] = watcher.reply_partition
        done = threading.Event()
        box: list[Reply] = []

        def replied(reply: Reply) -> None:
            box.append(reply)
            done.set()

        watcher.expect_reply(request_id, replied)
        try:
            self._send(short_name, workflow_id, rec)
        except BaseException:
            watcher.forget_reply(request_id)
            raise
        if not done.wait(timeout):
            if late is not None:
                watcher.expect_reply(request_id, late)
            else:
                watcher.forget_reply(request_id)
            raise NoReplyError(f"{short_name} for {workflow_id!r} is in Kafka, but no processor answered within "
                               f"{timeout:g}s (is one running?); it is applied when one does, so do not send it "
                               "again blindly")
        return box[0]

    def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                       task_queue: str = "default", execution_timeout: timedelta | float | None = None,
                       id_reuse_policy: str = ALLOW_DUPLICATE, if_exists: str = USE_EXISTING,
                       request_id: str | None = None, start_signal: str | None = None,
                       start_signal_args: Sequence[Any] = (), wait_for_ack: bool = True,
                       timeout: float = REPLY_TIMEOUT_S, search_attributes: Mapping[str, Any] | None = None,
                       memo: Mapping[str, Any] | None = None) -> WorkflowHandle:
        """Start a run of workflow `id`, or attach to it, and say which (`handle.outcome`).

        A running id: `if_exists="use_existing"` attaches, `"fail"` raises
        WorkflowAlreadyStartedError. A closed id: `id_reuse_policy` decides -- "allow_duplicate"
        (a new run), "allow_duplicate_failed_only", "reject_duplicate" (raise), or
        "terminate_if_running" (which also terminates a running run and starts a new one). The
        same `request_id` again attaches to the run it started, so a retry is safe.

        `start_signal` (signal-with-start): deliver that signal, with `start_signal_args`, to the
        run started or attached to, in the same transaction as the start.

        `search_attributes` make the run findable (`processor list "CustomerId = 'c1'"`): typed by
        value -- str (keyword), processor.Text (text), int, float, bool, an aware datetime, list of
        str (keyword_list). `memo`: values shown with the run, never indexed. Both carry over to a
        run that continues as new; workflow code changes attributes with
        `workflow.upsert_search_attributes`.

        Waits for the processor's answer (`timeout` seconds, NoReplyError past it). With
        `wait_for_ack=False` it returns at once: the handle's run is learned later, and
        `result()` waits for it."""
        rec = self.start_record(workflow, args, task_queue, execution_timeout, id_reuse_policy, if_exists,
                                request_id, start_signal, start_signal_args, search_attributes, memo)
        self._check("StartWorkflow", id, rec)
        self._completions().watch(id)  # before the start: its completion cannot be missed (_own_new_run)
        start = _Start()
        if not wait_for_ack:
            self._check("StartWorkflow", id, rec)
            self._remember(id, start)
            watcher = self._completions()
            rec["reply_partition"] = watcher.reply_partition
            watcher.expect_reply(rec["request_id"], start.arrived)
            self._send("StartWorkflow", id, rec, wait=False)
            return WorkflowHandle(self, id)
        self._remember(id, start)
        reply = self._ask("StartWorkflow", id, rec, timeout, late=start.arrived)
        start.arrived(reply)
        error = _refusal("StartWorkflow", reply)
        if error is not None:
            if self._starts.get(id) is start:
                del self._starts[id]  # result(id) then follows the run that is there, not this refusal
            raise error
        return WorkflowHandle(self, id, reply["run_id"], reply["outcome"])

    def _remember(self, workflow_id: str, start: _Start) -> None:
        """Keep the start (result() of the id waits for its run), and have the watcher keep that
        run's completion until the start is forgotten: a run this client started is waited for
        on the watcher alone (_own_new_run), so its completion must not be evicted."""
        self._starts[workflow_id] = start
        self._starts.move_to_end(workflow_id)
        watcher = self._watcher
        if watcher is not None:
            watcher.pin(workflow_id)
        while len(self._starts) > STARTS_KEPT:
            forgotten, _ = self._starts.popitem(last=False)
            if watcher is not None:
                watcher.unpin(forgotten)

    @staticmethod
    def start_record(workflow: type | Callable[..., Any] | str, args: tuple[Any, ...], task_queue: str,
                     execution_timeout: timedelta | float | None, id_reuse_policy: str = ALLOW_DUPLICATE,
                     if_exists: str = USE_EXISTING, request_id: str | None = None, start_signal: str | None = None,
                     start_signal_args: Sequence[Any] = (), search_attributes: Mapping[str, Any] | None = None,
                     memo: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if (problem := task_queue_problem(task_queue)) is not None:
            raise ConfigError(problem)
        if (problem := policy_problem(id_reuse_policy, if_exists)) is not None:
            raise ConfigError(problem)
        if start_signal is not None and (not isinstance(start_signal, str) or not start_signal):
            raise ConfigError(f"start_signal must be a signal name; got {start_signal!r}")
        return {"workflow_type": _workflow_type(workflow), "args": to_payloads(args), "task_queue": task_queue,
                "execution_timeout_ms": _ms(execution_timeout), "request_id": request_id or uuid.uuid4().hex,
                "id_reuse_policy": id_reuse_policy, "if_exists": if_exists, "signal_name": start_signal,
                "signal_args": to_payloads(tuple(start_signal_args)),
                "search_attributes": encode_attributes(search_attributes), "memo": encode_memo(memo)}

    def flush(self, timeout: float = 30) -> None:
        if self.producer.flush(timeout) != 0:
            raise KafkaUnavailableError(f"commands not acknowledged within {timeout}s")

    def _command(self, short_name: str, workflow_id: str, rec: dict[str, Any], run_id: str | None, wait: bool,
                 timeout: float) -> None:
        """Signal, cancel or terminate; waits for the processor's answer unless `wait` is False
        (then it is only queued)."""
        rec = {**rec, "run_id": run_id, "request_id": rec.get("request_id") or uuid.uuid4().hex}
        if not wait:
            self._send(short_name, workflow_id, rec, wait=False)
            return
        error = _refusal(short_name, self._ask(short_name, workflow_id, rec, timeout))
        if error is not None:
            raise error

    def signal(self, workflow_id: str, signal_name: str, *args: Any, run_id: str | None = None,
               wait_for_ack: bool = True, timeout: float = REPLY_TIMEOUT_S) -> None:
        """Signal the workflow's current run (or `run_id`, which must be current). Waits for the
        processor's answer and raises WorkflowNotFoundError / CommandRejectedError if it was not
        delivered (unknown id, closed run). `wait_for_ack=False` only queues it (for bulk sends;
        `flush()` waits for Kafka), with no answer."""
        self._command("SignalWorkflow", workflow_id, {"signal_name": signal_name, "args": to_payloads(args)},
                      run_id, wait_for_ack, timeout)

    def cancel(self, workflow_id: str, reason: str = "", *, run_id: str | None = None, wait_for_ack: bool = True,
               timeout: float = REPLY_TIMEOUT_S) -> None:
        self._command("CancelWorkflow", workflow_id, {"reason": reason}, run_id, wait_for_ack, timeout)

    def terminate(self, workflow_id: str, reason: str = "", *, run_id: str | None = None,
                  wait_for_ack: bool = True, timeout: float = REPLY_TIMEOUT_S) -> None:
        self._command("TerminateWorkflow", workflow_id, {"reason": reason}, run_id, wait_for_ack, timeout)

    def query(self, workflow_id: str, query_name: str, *args: Any, run_id: str | None = None,
              timeout: float = 30.0, result_type: object = None) -> Any:
        """Ask the workflow's `@workflow.query` handler; answered by the processor that owns the
        workflow, from its state now (a closed run: replayed). Raises WorkflowNotFoundError,
        QueryFailedError (no such query, the handler raised or tried to change the workflow) or
        NoReplyError past `timeout`. Writes nothing to the workflow's history."""
        rec = {"query_name": query_name, "args": to_payloads(args), "run_id": run_id, "request_id": uuid.uuid4().hex}
        return _answer(self._ask("QueryWorkflow", workflow_id, rec, timeout), result_type)

    def execute_update(self, workflow_id: str, update_name: str, *args: Any, run_id: str | None = None,
                       request_id: str | None = None, timeout: float = REPLY_TIMEOUT_S,
                       result_type: object = None) -> Any:
        """Run the workflow's `@workflow.update` handler and return its result. Its validator runs
        first: UpdateRejectedError (nothing recorded) if it raises, there is no such update or the
        workflow is not running; UpdateFailedError if the handler raised ApplicationError;
        WorkflowNotFoundError; NoReplyError past `timeout`. Sending the same `request_id` again
        returns the first outcome: an update is applied at most once within a run (a run
        remembers its last 1,000 completed ones)."""
        rec = _update_record(update_name, args, run_id, request_id)
        try:
            reply = self._ask("UpdateWorkflow", workflow_id, rec, timeout)
        except NoReplyError as exc:
            raise _no_update_reply(exc, rec) from None
        return _update_outcome(reply, result_type)

    def get_handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle:
        """A handle on run `run_id` of the workflow, or (None) on the run this client last
        started, else the id's latest completed run."""
        _check_id(workflow_id)
        return WorkflowHandle(self, workflow_id, run_id)

    # -- reads ----------------------------------------------------------------------------------

    def _completions(self) -> Watcher:
        with self._watcher_lock:
            if self._watcher is None:
                self._watcher = Watcher(self.bootstrap, self.topics)
            return self._watcher

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
    """One workflow id and, once known, its run. `outcome` is what the start did: "started" (a
    new run) or "attached" (the id was running); None for a handle not made by a start."""

    def __init__(self, client: Client, workflow_id: str, run_id: str | None = None,
                 outcome: str | None = None) -> None:
        self.client = client
        self.id = workflow_id
        self._run_id = run_id
        self.outcome = outcome

    @property
    def run_id(self) -> str | None:
        """The run this handle addresses; for a start sent without waiting, known once answered."""
        if self._run_id is None:
            start = self.client._starts.get(self.id)  # noqa: SLF001 - the handle's own client
            if start is not None and start.reply is not None and start.reply["outcome"] != REFUSED:
                self._run_id = start.reply["run_id"]
                self.outcome = start.reply["outcome"]
        return self._run_id

    def result(self, timeout: float | None = None, result_type: object = None) -> Any:
        return self.client.result(self.id, timeout, result_type, run_id=self.run_id)

    def signal(self, signal_name: str, *args: Any) -> None:
        self.client.signal(self.id, signal_name, *args, run_id=self.run_id)

    def cancel(self, reason: str = "") -> None:
        self.client.cancel(self.id, reason, run_id=self.run_id)

    def terminate(self, reason: str = "") -> None:
        self.client.terminate(self.id, reason, run_id=self.run_id)

    def query(self, query_name: str, *args: Any, timeout: float = 30.0, result_type: object = None) -> Any:
        return self.client.query(self.id, query_name, *args, timeout=timeout, result_type=result_type)

    def execute_update(self, update_name: str, *args: Any, request_id: str | None = None,
                       timeout: float = REPLY_TIMEOUT_S, result_type: object = None) -> Any:
        return self.client.execute_update(self.id, update_name, *args, run_id=self.run_id, request_id=request_id,
                                          timeout=timeout, result_type=result_type)

    def describe(self) -> dict[str, Any]:
        return self.client.describe(self.id, run_id=self.run_id)

    def history(self) -> list[dict[str, Any]]:
        return self.client.history(self.id, run_id=self.run_id)

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.id!r}, run_id={self._run_id!r})"


def _not_delivered(short_name: str, workflow_id: str, err: KafkaError) -> ProcessorError:
    """A delivery error as one of ours: a broker whose record limit is below ours says so."""
    if err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
        return PayloadTooLargeError(f"the {short_name} command of workflow {workflow_id!r} was refused by the broker "
                                    f"as too large ({err}): set DP_MAX_RECORD_BYTES below the broker's / topic's "
                                    "max.message.bytes, or pass large data by reference")
    return KafkaUnavailableError(f"{short_name} for {workflow_id!r} failed: {err}")


# The asyncio face lives in its own module; it is part of this one's API.
from processor._async_client import AsyncClient, AsyncWorkflowHandle  # noqa: E402
