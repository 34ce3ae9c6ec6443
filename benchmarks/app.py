"""The benchmark's workflow: three sequential no-op activities (engine overhead, not user work)."""

from __future__ import annotations

import asyncio
import os

from processor import Worker, activity, workflow


@activity.defn
def noop(value: int) -> int:
    return value + 1


# BENCH_START_TO_CLOSE_S=<seconds>: each activity under a start-to-close timeout (what Temporal
# requires), which makes workers report each start (ActivityStarted: one more command per activity).
_TIMEOUT = float(os.environ["BENCH_START_TO_CLOSE_S"]) if os.environ.get("BENCH_START_TO_CLOSE_S") else None


@workflow.defn
class ThreeNoops:
    @workflow.run
    async def run(self, start: int) -> int:
        a = await workflow.execute_activity(noop, start, start_to_close_timeout=_TIMEOUT)
        b = await workflow.execute_activity(noop, a, start_to_close_timeout=_TIMEOUT)
        return await workflow.execute_activity(noop, b, start_to_close_timeout=_TIMEOUT)


@workflow.defn
class Sleeper:
    """A workflow that only waits (a running workflow with a timer, for benchmarks/retention.py)."""

    @workflow.run
    async def run(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _kind(name: str) -> type:
    """One of the 20 workflow types of benchmarks/visibility.py: one no-op activity."""

    @workflow.defn(name=name)
    class Kind:
        @workflow.run
        async def run(self, start: int) -> int:
            result: int = await workflow.execute_activity(noop, start)
            return result

    return Kind


KINDS = [_kind(f"Kind{i:02d}") for i in range(20)]


app = Worker(workflows=[ThreeNoops, Sleeper, *KINDS], activities=[noop],
             max_concurrent_activities=int(os.environ.get("BENCH_MAX_CONC", "100")))
