"""Testing workflows: `WorkflowEnvironment` runs them with the processor's own engine and no
broker, on a clock that skips ahead over timers (a two-day wait takes milliseconds);
`ActivityEnvironment` runs one activity as a worker would (info, heartbeats, cancellation).

    from processor.testing import WorkflowEnvironment

    def test_an_unapproved_order_is_released_after_two_days():
        with WorkflowEnvironment(app) as env:
            env.start_workflow(OrderWorkflow.run, big_order, id="order-1")
            with pytest.raises(WorkflowFailureError, match="not approved"):
                env.result("order-1")
"""

from __future__ import annotations

from processor.testing._activity import ActivityEnvironment
from processor.testing._env import EnvHandle, WorkflowEnvironment

__all__ = ["ActivityEnvironment", "EnvHandle", "WorkflowEnvironment"]
