"""The asyncio client (`AsyncClient`, exported by processor.client): the sync Client's
commands and reads as awaitables. Waiting costs no thread: acknowledgements, replies and
completions resolve futures from the client's own reader threads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from confluent_kafka import KafkaError

from processor._answers import _answer, _no_update_reply, _outcome, _refusal, _update_outcome, _update_record
from processor._engine.runs import ALLOW_DUPLICATE, USE_EXISTING
from processor._kafka.topics import DEFAULT_PREFIX
from processor._payload import to_payloads
from processor._watcher import Completion, Reply
from processor.client import REPLY_TIMEOUT_S, Client, _not_delivered, _Start
from processor.exceptions import NoReplyError
from processor.schedule import (
    DEFAULT_CATCHUP,
    WORKFLOW_TYPE,
    AsyncScheduleHandle,
    schedule_spec,
    schedule_workflow_id,
)


class AsyncWorkflowHandle:
    """The asyncio face of WorkflowHandle."""

    def __init__(self, client: AsyncClient, workflow_id: str, run_id: str, outcome: str) -> None:
        self.client = client
        self.id = workflow_id
        self.run_id = run_id
        self.outcome = outcome

    async def result(self, timeout: float | None = None, result_type: object = None) -> Any:
        return await self.client.result(self.id, timeout, result_type, run_id=self.run_id)

    async def signal(self, signal_name: str, *args: Any) -> None:
        await self.client.signal(self.id, signal_name, *args, run_id=self.run_id)

    async def cancel(self, reason: str = "") -> None:
        await self.client.cancel(self.id, reason, run_id=self.run_id)

    async def terminate(self, reason: str = "") -> None:
        await self.client.terminate(self.id, reason, run_id=self.run_id)

    async def execute_update(self, update_name: str, *args: Any, request_id: str | None = None,
                             timeout: float = REPLY_TIMEOUT_S, result_type: object = None) -> Any:
        return await self.client.execute_update(self.id, update_name, *args, run_id=self.run_id,
                                                request_id=request_id, timeout=timeout, result_type=result_type)

    def __repr__(self) -> str:
        return f"AsyncWorkflowHandle({self.id!r}, run_id={self.run_id!r})"


class AsyncClient:
    """The client for asyncio code. Waiting costs no thread: acknowledgements, replies and
    completions resolve futures from the client's own reader threads, so thousands of concurrent
    `await client.result(...)` are cheap."""

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.sync = Client(bootstrap, prefix=prefix)

    async def _acked(self, short_name: str, workflow_id: str, rec: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def acked(err: KafkaError | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, err, short_name, workflow_id)

        self.sync._produce(short_name, workflow_id, rec, acked)  # noqa: SLF001 - the async face of the same client
        await asyncio.wait_for(fut, 30)

    async def _ask(self, short_name: str, workflow_id: str, rec: dict[str, Any], timeout: float,
                   also: Callable[[Reply], None] | None = None) -> Reply:
        self.sync._check(short_name, workflow_id, rec)  # noqa: SLF001 - before any Kafka set-up
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Reply] = loop.create_future()
        watcher = await asyncio.to_thread(self.sync._completions) if self.sync._watcher is None \
            else self.sync._watcher  # noqa: SLF001
        rec["reply_partition"] = watcher.reply_partition

        def replied(reply: Reply) -> None:
            if also is not None:
                also(reply)
            loop.call_soon_threadsafe(_resolve, fut, reply)

        watcher.expect_reply(rec["request_id"], replied)
        try:
            await self._acked(short_name, workflow_id, rec)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            if also is not None:
                watcher.expect_reply(rec["request_id"], also)  # a late answer still reaches result()
            else:
                watcher.forget_reply(rec["request_id"])
            raise NoReplyError(f"{short_name} for {workflow_id!r} is in Kafka, but no processor answered within "
                               f"{timeout:g}s (is one running?); it is applied when one does") from None
        except BaseException:
            watcher.forget_reply(rec["request_id"])
            raise

    async def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                             task_queue: str = "default", execution_timeout: timedelta | float | None = None,
                             id_reuse_policy: str = ALLOW_DUPLICATE, if_exists: str = USE_EXISTING,
                             request_id: str | None = None, start_signal: str | None = None,
                             start_signal_args: Sequence[Any] = (),
                             timeout: float = REPLY_TIMEOUT_S, search_attributes: Mapping[str, Any] | None = None,
                             memo: Mapping[str, Any] | None = None) -> AsyncWorkflowHandle:
        """As Client.start_workflow."""
        rec = Client.start_record(workflow, args, task_queue, execution_timeout, id_reuse_policy, if_exists,
                                  request_id, start_signal, start_signal_args, search_attributes, memo)
        self.sync._check("StartWorkflow", id, rec)  # noqa: SLF001
        watcher = self.sync._watcher  # noqa: SLF001
        if watcher is None or not watcher.watching(id):  # before the start, as Client.start_workflow
            await asyncio.to_thread(self.sync.watch, id)
        start = _Start()
        self.sync._remember(id, start)  # noqa: SLF001 - result(id) follows this start, as in Client
        reply = await self._ask("StartWorkflow", id, rec, timeout, start.arrived)
        error = _refusal("StartWorkflow", reply)
        if error is not None:
            if self.sync._starts.get(id) is start:  # noqa: SLF001
                del self.sync._starts[id]  # noqa: SLF001
            raise error
        return AsyncWorkflowHandle(self, id, reply["run_id"], reply["outcome"])

    async def _command(self, short_name: str, workflow_id: str, rec: dict[str, Any], run_id: str | None,
                       wait: bool, timeout: float) -> None:
        rec = {**rec, "run_id": run_id, "request_id": uuid.uuid4().hex}
        if not wait:
            self.sync._produce(short_name, workflow_id, rec, None)  # noqa: SLF001 - queued only, as in Client
            return
        error = _refusal(short_name, await self._ask(short_name, workflow_id, rec, timeout))
        if error is not None:
            raise error

    async def signal(self, workflow_id: str, signal_name: str, *args: Any, run_id: str | None = None,
                     wait_for_ack: bool = True, timeout: float = REPLY_TIMEOUT_S) -> None:
        await self._command("SignalWorkflow", workflow_id, {"signal_name": signal_name, "args": to_payloads(args)},
                            run_id, wait_for_ack, timeout)

    async def cancel(self, workflow_id: str, reason: str = "", *, run_id: str | None = None,
                     wait_for_ack: bool = True, timeout: float = REPLY_TIMEOUT_S) -> None:
        await self._command("CancelWorkflow", workflow_id, {"reason": reason}, run_id, wait_for_ack, timeout)

    async def terminate(self, workflow_id: str, reason: str = "", *, run_id: str | None = None,
                        wait_for_ack: bool = True, timeout: float = REPLY_TIMEOUT_S) -> None:
        await self._command("TerminateWorkflow", workflow_id, {"reason": reason}, run_id, wait_for_ack, timeout)

    async def query(self, workflow_id: str, query_name: str, *args: Any, run_id: str | None = None,
                    timeout: float = 30.0, result_type: object = None) -> Any:
        rec = {"query_name": query_name, "args": to_payloads(args), "run_id": run_id, "request_id": uuid.uuid4().hex}
        return _answer(await self._ask("QueryWorkflow", workflow_id, rec, timeout), result_type)

    async def execute_update(self, workflow_id: str, update_name: str, *args: Any, run_id: str | None = None,
                             request_id: str | None = None, timeout: float = REPLY_TIMEOUT_S,
                             result_type: object = None) -> Any:
        """See Client.execute_update."""
        rec = _update_record(update_name, args, run_id, request_id)
        try:
            reply = await self._ask("UpdateWorkflow", workflow_id, rec, timeout)
        except NoReplyError as exc:
            raise _no_update_reply(exc, rec) from None
        return _update_outcome(reply, result_type)

    async def result(self, workflow_id: str, timeout: float | None = None,
                     result_type: object = None, run_id: str | None = None) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Completion] = loop.create_future()

        def arrived(res: Completion) -> None:
            loop.call_soon_threadsafe(_resolve, fut, res)

        watcher = self.sync._watcher  # noqa: SLF001
        if watcher is None or not watcher.watching(workflow_id):  # blocking metadata calls: off the loop
            await asyncio.to_thread(self.sync.watch, workflow_id)
        forget = self.sync.on_result(workflow_id, arrived, run_id)
        try:
            completion = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            forget()
            raise TimeoutError(f"workflow {workflow_id!r} did not complete within {timeout}s") from None
        except asyncio.CancelledError:
            forget()
            raise
        return _outcome(workflow_id, completion, result_type)

    async def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.describe, workflow_id, run_id)

    async def history(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.history, workflow_id, 30, run_id)

    async def create_schedule(self, schedule_id: str, workflow: Any, *args: Any, cron: str | None = None,
                              every: timedelta | float | None = None, offset: timedelta | float = 0.0,
                              jitter: timedelta | float = 0.0, overlap: str = "skip",
                              catchup_window: timedelta | float = DEFAULT_CATCHUP, task_queue: str = "default",
                              execution_timeout: timedelta | float | None = None, paused: bool = False,
                              note: str = "") -> AsyncScheduleHandle:
        """As Client.create_schedule; the handle's calls are awaited."""
        from processor.client import _workflow_type

        spec = schedule_spec(schedule_id, _workflow_type(workflow), args, cron=cron, every=every, offset=offset,
                             jitter=jitter, overlap=overlap, catchup_window=catchup_window, task_queue=task_queue,
                             execution_timeout=execution_timeout, paused=paused, note=note)
        await self.start_workflow(WORKFLOW_TYPE, asdict(spec), id=schedule_workflow_id(schedule_id), if_exists="fail")
        return AsyncScheduleHandle(self, schedule_id)

    def get_schedule_handle(self, schedule_id: str) -> AsyncScheduleHandle:
        return AsyncScheduleHandle(self, schedule_id)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)


def _settle(fut: asyncio.Future[None], err: KafkaError | None, short_name: str, workflow_id: str) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(_not_delivered(short_name, workflow_id, err))


def _resolve(fut: asyncio.Future[Any], res: Any) -> None:
    if not fut.done():
        fut.set_result(res)
