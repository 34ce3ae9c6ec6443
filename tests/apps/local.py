"""Local activities next to normal ones, for the local-activity chaos test and benchmark: the
same step run `n` times either way. Each run appends a line to $DP_TEST_RUN_LOG (when set)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from processor import Worker, activity, workflow
from tests.apps.basic import _log_run


@activity.defn
def bump(i: int) -> int:
    _log_run("bump")
    delay = float(os.environ.get("DP_TEST_LOCAL_DELAY", "0"))
    if delay:
        time.sleep(delay)
    return i + 1


@workflow.defn
class LocalSteps:
    @workflow.run
    async def run(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = await workflow.execute_local_activity(bump, value)
        return value


@workflow.defn
class RemoteSteps:
    @workflow.run
    async def run(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = await workflow.execute_activity(bump, value, start_to_close_timeout=timedelta(seconds=30))
        return value


app = Worker(workflows=[LocalSteps, RemoteSteps], activities=[bump])
