"""Version 2, deployed while v1 runs sleep: new runs ship by courier; runs that recorded the sleep
under v1 keep the old branch (`workflow.patched`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from processor import Worker, workflow
from tests.apps.patch_v1 import send


@workflow.defn(name="Dispatch")
class Dispatch:
    @workflow.run
    async def run(self, order: str, wait_s: float) -> str:
        if workflow.patched("courier"):
            how = "courier"
        else:
            how = "post"
        await asyncio.sleep(wait_s)
        return await workflow.execute_activity(send, how, order, start_to_close_timeout=timedelta(seconds=30))


app = Worker(workflows=[Dispatch], activities=[send])
