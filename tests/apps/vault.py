"""A workflow whose input and result are secrets, for the encrypted-payload test: its one
activity returns a derived secret."""

from __future__ import annotations

from datetime import timedelta

from processor import RetryPolicy, Worker, activity, workflow


@activity.defn
def seal(secret: str) -> str:
    return f"sealed:{secret[::-1]}"


@workflow.defn
class Vault:
    @workflow.run
    async def run(self, secret: str) -> str:
        policy = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=1))
        sealed: str = await workflow.execute_activity(seal, secret, retry_policy=policy,
                                                      start_to_close_timeout=timedelta(seconds=30))
        return sealed


app = Worker(workflows=[Vault], activities=[seal])
