"""Order fulfilment: reserve stock, charge the card, ship -- and undo the reservation if the
card is declined.

Run it: `processor dev` (local Kafka, topics, processor, worker, and a demo of 10 orders), or
against your own broker: `processor run --app examples.orders:app` then
`processor start OrderWorkflow --id order-1 --input '{"order_id": "order-1", "sku": "SKU-1",
"quantity": 2, "card": "4242-4242-4242-4242"}' --wait`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from processor import Worker, activity, workflow
from processor.exceptions import ActivityError, ApplicationError

DECLINED_CARDS = {"4000-0000-0000-0002"}


@dataclass
class Order:
    order_id: str
    sku: str
    quantity: int
    card: str


@dataclass
class Receipt:
    order_id: str
    reservation: str
    charge: str
    tracking: str


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
async def ship(order: Order, reservation: str) -> str:
    return f"TRK-{order.order_id.upper()}"


@activity.defn
def release_stock(reservation: str) -> None:
    return None


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order: Order) -> Receipt:
        timeout = timedelta(seconds=30)
        reservation = await workflow.execute_activity(reserve_stock, order, start_to_close_timeout=timeout)
        try:
            charge = await workflow.execute_activity(charge_card, order, start_to_close_timeout=timeout)
        except ActivityError:
            await workflow.execute_activity(release_stock, reservation, start_to_close_timeout=timeout)
            raise
        tracking = await workflow.execute_activity(ship, order, reservation, start_to_close_timeout=timeout)
        return Receipt(order.order_id, reservation, charge, tracking)


app = Worker(workflows=[OrderWorkflow], activities=[reserve_stock, charge_card, ship, release_stock])
