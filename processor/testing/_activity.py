"""`ActivityEnvironment`: run one activity function the way a worker runs an attempt, with no
workflow, no engine and no broker -- `activity.info()` answers, heartbeats are captured, and a
cancellation can be delivered while it runs."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from processor import activity


class ActivityEnvironment:
    """Run an activity as attempt `info` (defaults: attempt 1 of a test workflow).

        env = ActivityEnvironment(attempt=3, heartbeat_details=("page", 7))
        assert env.run(fetch_pages, "https://example.com") == 12
        assert env.heartbeats[-1] == ("page", 12)

    `on_heartbeat(details)` is called on every `activity.heartbeat(...)`; call `cancel()` (from it,
    or from another thread) and the attempt's next heartbeat raises ActivityCancelledError, as
    when its workflow is canceled."""

    def __init__(self, info: activity.ActivityInfo | None = None, *,
                 on_heartbeat: Callable[[tuple[Any, ...]], None] | None = None, **info_fields: Any) -> None:
        self._info = info
        self._fields = info_fields
        self.on_heartbeat = on_heartbeat
        self.heartbeats: list[tuple[Any, ...]] = []
        self._cancelled = threading.Event()
        self._reason: list[str] = []
        self._lock = threading.Lock()

    def info_for(self, fn: Callable[..., Any]) -> activity.ActivityInfo:
        """The ActivityInfo the attempt of `fn` sees."""
        if self._info is not None:
            return dataclasses.replace(self._info, **self._fields) if self._fields else self._info
        name = activity.ActivityDefinition.of(fn).name
        defaults: dict[str, Any] = {"workflow_id": "test-workflow", "workflow_type": "TestWorkflow",
                                    "activity_seq": 1, "activity_type": name, "attempt": 1,
                                    "task_queue": "default", "scheduled_time": datetime.now(UTC)}
        return activity.ActivityInfo(**{**defaults, **self._fields})

    def cancel(self, reason: str = "canceled by the test") -> None:
        with self._lock:
            self._reason.append(reason)
            self._cancelled.set()

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the activity (sync or async, decorated with @activity.defn) and return its result;
        what it raises propagates."""
        definition = activity.ActivityDefinition.of(fn)

        def beat(details: tuple[Any, ...]) -> None:
            self.heartbeats.append(details)
            if self.on_heartbeat is not None:
                self.on_heartbeat(details)

        ctx = activity.ActivityContext(info=self.info_for(fn), heartbeat_fn=beat, cancelled=self._cancelled,
                                       cancel_reason=self._reason)
        token = activity._set_context(ctx)  # noqa: SLF001 - the environment plays the worker
        try:
            if definition.is_async:
                return asyncio.run(definition.fn(*args))
            return contextvars.copy_context().run(definition.fn, *args)
        finally:
            activity._reset_context(token)  # noqa: SLF001
