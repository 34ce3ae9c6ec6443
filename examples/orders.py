"""Order fulfilment: reserve stock; large orders wait (up to two days) for a person to approve
them by signal; charge the card; ship every parcel in a child workflow of its own -- and undo the
reservation if the card is declined or nobody approves. `state` answers what the order is doing.

Run it: `processor dev` (local Kafka, topics, processor, worker, and a demo of 10 orders), or
against your own broker: `processor run --app examples.orders:app` then
`processor start OrderWorkflow --id order-1 --input '{"order_id": "order-1", "sku": "SKU-1",
"quantity": 3, "card": "4242-4242-4242-4242"}'`, `processor query order-1 state`,
`processor signal order-1 approve --input '"ann"'` and `processor show order-1`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from processor import Worker, activity, workflow
from processor.exceptions import ActivityError, ApplicationError

DECLINED_CARDS = {"4000-0000-0000-0002"}
APPROVAL_FROM_QUANTITY = 3  # orders this large wait for a person
APPROVAL_TIMEOUT = timedelta(days=2)
PARCEL_SIZE = 2  # items per parcel: one ShipmentWorkflow each
ACTIVITY_TIMEOUT = timedelta(seconds=30)


@dataclass
class Order:
    order_id: str
    sku: str
    quantity: int
    card: str


@dataclass
class Parcel:
    order_id: str
    number: int
    sku: str
    items: int


@dataclass
class Receipt:
    order_id: str
    reservation: str
    charge: str
    tracking: list[str]
    approved_by: str | None


@activity.defn
def reserve_stock(order: Order) -> str:
    # A real system passes activity.info().idempotency_key to the inventory service so that a
    # retried attempt reserves once.
    return f"rsv-{activity.info().idempotency_key}"


@activity.defn
def charge_card(order: Order) -> str:
    if order.card in DECLINED_CARDS:
        raise ApplicationError(f"card ending {order.card[-4:]} was declined", type="CardDeclined",
                               non_retryable=True)
    return f"ch-{order.order_id}-{order.quantity * 1999}"


@activity.defn
async def ship(parcel: Parcel) -> str:
    return f"TRK-{parcel.order_id.upper()}-{parcel.number}"


@activity.defn
def release_stock(reservation: str) -> None:
    return None


@workflow.defn
class ShipmentWorkflow:
    """One parcel of an order, as a child workflow (on whichever partition its id lands)."""

    @workflow.run
    async def run(self, parcel: Parcel) -> str:
        return await workflow.execute_activity(ship, parcel, start_to_close_timeout=ACTIVITY_TIMEOUT)


@workflow.defn
class OrderWorkflow:
    def __init__(self) -> None:
        self.status = "received"
        self.approved_by: str | None = None
        self.rejected: str | None = None
        self.tracking: list[str] = []

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = self.approved_by or who

    @workflow.signal
    def reject(self, reason: str) -> None:
        self.rejected = self.rejected or reason

    @workflow.query
    def state(self) -> dict[str, object]:
        return {"status": self.status, "approved_by": self.approved_by, "tracking": self.tracking}

    @workflow.run
    async def run(self, order: Order) -> Receipt:
        reservation = await workflow.execute_activity(reserve_stock, order, start_to_close_timeout=ACTIVITY_TIMEOUT)
        self.status = "reserved"
        if order.quantity >= APPROVAL_FROM_QUANTITY:
            self.status = "awaiting approval"
            try:  # a durable wait: two days cost nothing, and survive any restart
                await workflow.wait_condition(lambda: self.approved_by is not None or self.rejected is not None,
                                              timeout=APPROVAL_TIMEOUT)
            except TimeoutError:
                self.rejected = f"not approved within {APPROVAL_TIMEOUT.days} days"
            if self.approved_by is None:
                await self._release(reservation, f"not approved: {self.rejected}")
                raise ApplicationError(f"order {order.order_id} was not approved: {self.rejected}",
                                       type="NotApproved", non_retryable=True)
        try:
            charge = await workflow.execute_activity(charge_card, order, start_to_close_timeout=ACTIVITY_TIMEOUT)
        except ActivityError:
            await self._release(reservation, "card declined")
            raise
        self.status = "shipping"
        parcels = [Parcel(order.order_id, n + 1, order.sku, min(PARCEL_SIZE, order.quantity - start))
                   for n, start in enumerate(range(0, order.quantity, PARCEL_SIZE))]
        self.tracking = list(await asyncio.gather(*(
            workflow.execute_child_workflow(ShipmentWorkflow.run, parcel, id=f"{order.order_id}-parcel-{parcel.number}")
            for parcel in parcels)))
        self.status = "shipped"
        return Receipt(order.order_id, reservation, charge, self.tracking, self.approved_by)

    async def _release(self, reservation: str, why: str) -> None:
        self.status = f"cancelled ({why})"
        await workflow.execute_activity(release_stock, reservation, start_to_close_timeout=ACTIVITY_TIMEOUT)


app = Worker(workflows=[OrderWorkflow, ShipmentWorkflow],
             activities=[reserve_stock, charge_card, ship, release_stock])
