"""durable-processor: durable workflows as plain async Python, made durable by Kafka.

    from processor import workflow, activity, Worker, Client
"""

from __future__ import annotations

from processor import activity, workflow
from processor._app import Worker
from processor._kafka.config import configure as configure_kafka
from processor._search import Text
from processor.exceptions import (
    ActivityError,
    ApplicationError,
    NondeterminismError,
    ProcessorError,
    WorkflowFailureError,
)
from processor.replayer import Replayer
from processor.workflow import RetryPolicy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from processor.client import AsyncClient, Client, WorkflowHandle

# The client pulls in confluent_kafka; workflow code (and the pure runtime) must not, so the
# client names are imported on first use.
_LAZY = {"AsyncClient", "Client", "WorkflowHandle"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from processor import client

        return getattr(client, name)
    raise AttributeError(f"module 'processor' has no attribute {name!r}")

__all__ = [
    "ActivityError",
    "ApplicationError",
    "AsyncClient",
    "Client",
    "NondeterminismError",
    "ProcessorError",
    "Replayer",
    "RetryPolicy",
    "Text",
    "Worker",
    "WorkflowFailureError",
    "WorkflowHandle",
    "activity",
    "configure_kafka",
    "workflow",
]
