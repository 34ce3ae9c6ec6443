"""Every exception the public API raises.

One root (`ProcessorError`) so a user can catch everything of ours in one clause. Errors that a
workflow or activity raises on purpose are `ApplicationError`; `non_retryable=True` makes a
failure terminal (Restate's TerminalError) instead of retried.

Vendor exceptions (confluent_kafka.KafkaException, fastavro errors) are translated at the adapter
edge and never reach users.
"""

from __future__ import annotations

__all__ = [
    "ActivityCancelledError",
    "ActivityError",
    "ApplicationError",
    "ChildWorkflowError",
    "CommandRejectedError",
    "ConfigError",
    "DecodeError",
    "KafkaUnavailableError",
    "NoReplyError",
    "NondeterminismError",
    "PayloadError",
    "PayloadKeyError",
    "PayloadTooLargeError",
    "ProcessorError",
    "QueryFailedError",
    "TopicMismatchError",
    "UpdateFailedError",
    "UpdateRejectedError",
    "WorkflowAlreadyStartedError",
    "WorkflowFailureError",
    "WorkflowNotFoundError",
]


class ProcessorError(Exception):
    """Root of every error raised by durable-processor."""


class ConfigError(ProcessorError):
    """A setting, decorator or call argument is wrong; the message says what to change."""


class KafkaUnavailableError(ProcessorError):
    """The broker cannot be reached, or a tool needed to run the local broker is missing."""


class TopicMismatchError(ProcessorError):
    """An existing topic disagrees with its declaration (partitions, cleanup policy)."""


class DecodeError(ProcessorError):
    """Bytes that are not a record of the wire contract: the message says what was wrong."""


class PayloadError(ProcessorError, TypeError):
    """A value that the payload converter cannot serialise or deserialise."""


class PayloadKeyError(PayloadError):
    """An encrypted payload this process holds no key for, or a key that does not open it
    (processor/payloads.py). Not the value's fault: workflow code never sees it -- the workflow
    task fails and the workflow is held until the process has the key -- and an activity attempt
    fails and is retried."""


class PayloadTooLargeError(PayloadError, ValueError):
    """A record would be larger than Kafka accepts (see `processor._limits`); nothing was sent."""


class ApplicationError(ProcessorError):
    """Raised by user code in a workflow or activity to fail it with a typed, described error.

    `type` defaults to the class name; `non_retryable=True` stops activity retries at once.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,  # noqa: A002 - mirrors the Failure record's field
        non_retryable: bool = False,
        details: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type or self.__class__.__name__
        self.non_retryable = non_retryable
        self.details = details


class ActivityCancelledError(ApplicationError):
    """Raised by `activity.heartbeat()` in an activity whose workflow was canceled or closed: stop
    the work (clean up if need be) and let it propagate. Reported as a non-retryable failure."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="ActivityCancelled", non_retryable=True)


class ActivityError(ProcessorError):
    """Raised inside a workflow when an activity failed for good (retries exhausted, non-retryable,
    or timed out). `__cause__` is the activity's own error as an `ApplicationError`."""

    def __init__(self, message: str, *, activity_type: str, activity_seq: int, attempt: int) -> None:
        super().__init__(message)
        self.activity_type = activity_type
        self.activity_seq = activity_seq
        self.attempt = attempt


class ChildWorkflowError(ProcessorError):
    """Raised inside a parent workflow when a child did not complete: it failed, was canceled,
    terminated or timed out, or could not start (its id was already running). `status` says
    which; `__cause__` is the child's own failure as an `ApplicationError`."""

    def __init__(self, message: str, *, workflow_id: str, run_id: str, status: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.status = status


class NondeterminismError(ProcessorError):
    """Workflow code no longer matches the history it is replaying.

    The workflow is held (neither failed nor advanced) until code that matches is deployed.
    """

    def __init__(self, workflow_id: str, seq: int, expected: str, recorded: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} is nondeterministic at history seq {seq}: the code now "
            f"emits {expected}, but history recorded {recorded}. Deploy code that replays this "
            "history (keep the old code path for running workflows, or register the new code under a "
            "new workflow type); the workflow is held until then."
        )
        self.workflow_id = workflow_id
        self.seq = seq
        self.expected = expected
        self.recorded = recorded


class WorkflowAlreadyStartedError(ProcessorError):
    """A start was refused: the id is running and the start said `if_exists="fail"`, or the id
    already ran and its `id_reuse_policy` does not allow another run. `run_id` is the existing run."""

    def __init__(self, workflow_id: str, run_id: str, message: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowNotFoundError(ProcessorError):
    """No workflow with that id exists (or its history was pruned)."""


class CommandRejectedError(ProcessorError):
    """A signal, cancel or terminate the processor did not apply: the workflow is already closed,
    or the command named a run that is not the id's current run. The message says which."""

    def __init__(self, workflow_id: str, run_id: str, message: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id


class QueryFailedError(ProcessorError):
    """A query was not answered: no such query handler, the handler raised, or it tried to change
    the workflow (schedule work, sleep, emit a command). The message says which."""


class UpdateRejectedError(ProcessorError):
    """An update was not accepted: no such update handler, its validator raised, or the workflow is
    not running. Nothing was recorded."""


class UpdateFailedError(ProcessorError):
    """An accepted update's handler failed (raised ApplicationError, or let an ActivityError
    through); `__cause__` is that error. The workflow goes on."""


class NoReplyError(ProcessorError):
    """A command is in Kafka but no processor answered it in time (none running, or all busy
    restoring): it is applied when one does, so do not send it again blindly."""


class WorkflowFailureError(ProcessorError):
    """`result()` of a workflow that failed, was canceled, terminated or timed out.

    `status` says which; `__cause__` carries the workflow's failure as an `ApplicationError`.
    """

    def __init__(self, workflow_id: str, status: str, message: str) -> None:
        super().__init__(f"workflow {workflow_id!r} {status}: {message}")
        self.workflow_id = workflow_id
        self.status = status
