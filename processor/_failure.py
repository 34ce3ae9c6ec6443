"""Exceptions <-> `Failure {type, message, stack_trace, non_retryable, cause}` records (docs/model.md).

A Failure is how an error crosses a process boundary (activity worker -> history -> workflow) and
outlives the process that raised it. The original exception class may not exist on the reading
side, so a Failure always comes back as an `ApplicationError` whose `type` names the original.
"""

from __future__ import annotations

import traceback
from typing import TypedDict

from processor.exceptions import ApplicationError

__all__ = ["MAX_CAUSE_DEPTH", "Failure", "RemoteApplicationError", "exception_from_failure", "failure_from_exception"]

# Causes beyond this depth are cut: a cause cycle, or a pathological chain, must not make a record
# (and every replay that decodes it) unbounded.
MAX_CAUSE_DEPTH = 20


class Failure(TypedDict):
    type: str
    message: str
    stack_trace: str
    non_retryable: bool
    cause: Failure | None


class RemoteApplicationError(ApplicationError):
    """An `ApplicationError` rebuilt from a Failure record, i.e. raised somewhere else.

    `remote_stack_trace` is the original traceback (also attached as an exception note so it shows
    when the error is printed); re-encoding keeps it instead of this object's own traceback.
    """

    def __init__(self, message: str, *, type: str, non_retryable: bool, remote_stack_trace: str) -> None:  # noqa: A002
        super().__init__(message, type=type, non_retryable=non_retryable)
        self.remote_stack_trace = remote_stack_trace
        if remote_stack_trace:
            self.add_note(f"original stack trace ({type}):\n{remote_stack_trace.rstrip()}")


def failure_from_exception(exc: BaseException) -> Failure:
    """Encode `exc` and its `__cause__` chain (at most MAX_CAUSE_DEPTH deep)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < MAX_CAUSE_DEPTH:
        chain.append(current)
        current = current.__cause__
    # Build from the deepest cause up so each record can point at the one below it.
    cause: Failure | None = None
    for item in reversed(chain):
        cause = _one_failure(item, cause)
    assert cause is not None
    return cause


def _one_failure(exc: BaseException, cause: Failure | None) -> Failure:
    if isinstance(exc, ApplicationError):
        type_name, message, non_retryable = exc.type, exc.message, exc.non_retryable
    else:
        type_name, message, non_retryable = type(exc).__name__, str(exc), False
    if isinstance(exc, RemoteApplicationError) and exc.remote_stack_trace:
        stack_trace = exc.remote_stack_trace
    else:
        stack_trace = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
    return {
        "type": type_name,
        "message": message,
        "stack_trace": stack_trace,
        "non_retryable": non_retryable,
        "cause": cause,
    }


def exception_from_failure(failure: Failure) -> ApplicationError:
    """Decode a Failure into an ApplicationError with the `__cause__` chain rebuilt."""
    records: list[Failure] = []
    current: Failure | None = failure
    while current is not None and len(records) < MAX_CAUSE_DEPTH:
        records.append(current)
        current = current.get("cause")
    built: ApplicationError | None = None
    for record in reversed(records):
        err = RemoteApplicationError(
            record.get("message", ""),
            type=record.get("type") or "Error",
            non_retryable=bool(record.get("non_retryable", False)),
            remote_stack_trace=record.get("stack_trace", ""),
        )
        err.__cause__ = built
        built = err
    assert built is not None
    return built
