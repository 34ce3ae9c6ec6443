"""The deterministic workflow runtime: events in, commands out (docs/model.md, "The runtime contract").

Pure by construction: nothing here imports Kafka, RocksDB or Avro, reads the clock or draws
randomness except from history, so every replay and nondeterminism test is a fast unit test.
Workflow code that calls the clock, `random` or `uuid` itself is refused at the call (`_guard`).
"""

from __future__ import annotations

from processor._runtime._history import Completion, WorkflowTaskError
from processor._runtime._instance import WorkflowInstance

__all__ = ["Completion", "WorkflowInstance", "WorkflowTaskError"]
