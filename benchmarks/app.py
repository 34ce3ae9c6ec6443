"""The benchmark's workflow: three sequential no-op activities (engine overhead, not user work)."""

from __future__ import annotations

import os

from processor import Worker, activity, workflow


@activity.defn
def noop(value: int) -> int:
    return value + 1


@workflow.defn
class ThreeNoops:
    @workflow.run
    async def run(self, start: int) -> int:
        a = await workflow.execute_activity(noop, start)
        b = await workflow.execute_activity(noop, a)
        return await workflow.execute_activity(noop, b)


app = Worker(workflows=[ThreeNoops], activities=[noop],
             max_concurrent_activities=int(os.environ.get("BENCH_MAX_CONC", "100")))
