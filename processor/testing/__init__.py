"""Testing workflows: `WorkflowEnvironment` runs them with the processor's own engine and no
broker, on a clock that skips ahead over timers (a two-day wait takes milliseconds);
`KafkaWorkflowEnvironment` has the same calls on a real broker, its clock skipping too;
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
from processor.testing._kafka_env import KafkaWorkflowEnvironment

__all__ = ["ActivityEnvironment", "EnvHandle", "KafkaWorkflowEnvironment", "WorkflowEnvironment"]

# This package is also the pytest plugin (entry point pytest11, or `pytest -p processor.testing`):
# its hooks and fixtures (plugin.py) are found here when pytest is there to load them.
try:
    import pytest as _pytest  # noqa: F401 - only whether it is installed
except ImportError:  # pragma: no cover - processor.testing used without pytest
    pass
else:
    from processor.testing.plugin import (  # noqa: F401 - the plugin's fixtures and hooks
        dp_app,
        dp_env,
        kafka_bootstrap,
        pytest_addoption,
        replay_histories,
        workflow_env,
    )
