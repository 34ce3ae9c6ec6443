"""Version 1 of a long-running workflow: sleep, then ship by post (tests/integration/test_patch_deploy.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from processor import Worker, activity, workflow


@activity.defn
def send(how: str, order: str) -> str:
    return f"{order} sent by {how}"


@workflow.defn(name="Dispatch")
class Dispatch:
    @workflow.run
    async def run(self, order: str, wait_s: float) -> str:
        await asyncio.sleep(wait_s)
        return await workflow.execute_activity(send, "post", order, start_to_close_timeout=timedelta(seconds=30))


app = Worker(workflows=[Dispatch], activities=[send])
