"""Workflows and activities the runtime tests drive (activities never run here: tests feed results)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from processor import activity, workflow
from processor.exceptions import ActivityError, ApplicationError


@dataclass
class Order:
    id: str
    amount: int


@dataclass
class Charge:
    order_id: str
    charged: int
    tags: list[str] = field(default_factory=list)


@activity.defn
async def charge(order: Order) -> Charge:
    raise AssertionError("activities are not run by runtime tests")


@activity.defn
def ship(order_id: str) -> str:
    raise AssertionError("activities are not run by runtime tests")


@activity.defn
def square(n: int) -> int:
    return n * n


@activity.defn
def cleanup(reason: str) -> None:
    return None


@workflow.defn
class Checkout:
    @workflow.run
    async def run(self, order: Order) -> dict[str, Any]:
        paid = await workflow.execute_activity(charge, order, start_to_close_timeout=10)
        assert isinstance(paid, Charge), f"dataclass result expected, got {paid!r}"
        tracking = await workflow.execute_activity(
            ship,
            paid.order_id,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=workflow.RetryPolicy(maximum_attempts=3),
        )
        await workflow.execute_activity("notify", f"shipped {tracking}", task_queue="emails")
        return {"order": order.id, "tracking": tracking, "charged": paid.charged}


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, n: int) -> list[int]:
        results = await asyncio.gather(*(workflow.execute_activity(square, i) for i in range(n)))
        return list(results)


@workflow.defn
class CatchesActivityError:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_activity(ship, "o-1")
        except ActivityError as err:
            cause = err.__cause__
            assert isinstance(cause, ApplicationError)
            return f"{err.activity_type}#{err.activity_seq} attempt {err.attempt}: {cause.type}: {cause.message}"
        return "no error"


@workflow.defn
class LetsActivityErrorEscape:
    @workflow.run
    async def run(self) -> str:
        return str(await workflow.execute_activity(ship, "o-1"))


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return workflow.now().isoformat()


@workflow.defn
class RacesActivityAgainstTimeout:
    @workflow.run
    async def run(self, timeout_s: float) -> str:
        try:
            return str(await asyncio.wait_for(workflow.execute_activity(ship, "o-1"), timeout_s))
        except TimeoutError:
            return "timed out"


@dataclass
class Item:
    sku: str
    qty: int


@workflow.defn(name="approval")
class Approval:
    def __init__(self) -> None:
        self.approved_by: str | None = None
        self.items: list[Item] = []

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.signal(name="add-item")
    async def add_item(self, item: Item) -> None:
        assert isinstance(item, Item)
        self.items.append(item)

    @workflow.run
    async def run(self, timeout_s: float) -> dict[str, Any]:
        try:
            await workflow.wait_condition(lambda: self.approved_by is not None, timeout=timeout_s)
        except TimeoutError:
            return {"approved_by": None, "items": len(self.items)}
        return {"approved_by": self.approved_by, "items": [i.sku for i in self.items]}


@workflow.defn
class CleansUpOnCancel:
    @workflow.run
    async def run(self) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await workflow.execute_activity(cleanup, "canceled")
            raise
        return "slept"


@workflow.defn
class SwallowsCancel:
    @workflow.run
    async def run(self) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "canceled, but finished anyway"
        return "slept"


@workflow.defn
class Deterministic:
    @workflow.run
    async def run(self) -> list[Any]:
        info = workflow.info()
        first = [
            workflow.now().isoformat(),
            workflow.time(),
            asyncio.get_running_loop().time(),
            workflow.random().randint(0, 10**9),
            str(workflow.uuid4()),
            info.workflow_id,
            info.start_time.isoformat(),
            workflow.in_workflow(),
        ]
        workflow.logger.info("before the activity")
        await workflow.execute_activity(square, 3)
        workflow.logger.info("after the activity")
        return [*first, workflow.now().isoformat(), workflow.random().random(), str(workflow.uuid4())]
