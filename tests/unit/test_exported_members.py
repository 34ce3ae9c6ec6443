"""The public surface is small and pinned: changing it is a deliberate act."""

from __future__ import annotations

import processor
from processor import activity, workflow


def test_top_level_exports() -> None:
    assert processor.__all__ == [
        "ActivityError", "ApplicationError", "AsyncClient", "Client", "NondeterminismError", "ProcessorError",
        "Replayer", "RetryPolicy", "Text", "Worker", "WorkflowFailureError", "WorkflowHandle", "activity",
        "configure_kafka", "workflow",
    ]
    for name in processor.__all__:
        assert getattr(processor, name) is not None


def test_sdk_modules_expose_what_users_call() -> None:
    for name in ("defn", "run", "signal", "execute_activity", "execute_local_activity", "wait_condition", "now",
                 "time", "random", "uuid4", "info", "logger", "in_workflow", "RetryPolicy", "upsert_search_attributes",
                 "Text"):
        assert hasattr(workflow, name), name
    for name in ("defn", "info", "heartbeat", "in_activity", "ActivityInfo", "logger"):
        assert hasattr(activity, name), name
