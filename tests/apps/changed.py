"""`Approval` as a careless deploy changed it: an activity inserted before the wait.

A workflow started under tests/apps/basic.py and replayed with this code is nondeterministic."""

from __future__ import annotations

import asyncio

from processor import Worker, workflow
from tests.apps.basic import ThreeSteps, async_step, step


@workflow.defn(name="Approval")
class ChangedApproval:
    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.run
    async def run(self, pause_s: float) -> str:
        await workflow.execute_activity(async_step, 1)
        await asyncio.sleep(pause_s)
        await workflow.wait_condition(lambda: self.approved_by is not None)
        return f"approved by {self.approved_by}"


app = Worker(workflows=[ThreeSteps, ChangedApproval], activities=[step, async_step])
