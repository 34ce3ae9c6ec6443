from __future__ import annotations

from processor._failure import MAX_CAUSE_DEPTH, exception_from_failure, failure_from_exception
from processor.exceptions import ApplicationError


def raise_chain() -> ApplicationError:
    try:
        try:
            {}["missing"]
        except KeyError as key_error:
            raise ApplicationError("order not found", type="NotFound", non_retryable=True) from key_error
    except ApplicationError as err:
        return err
    raise AssertionError("unreachable")


def test_failure_from_exception_keeps_type_message_trace_and_cause() -> None:
    failure = failure_from_exception(raise_chain())
    assert (failure["type"], failure["message"], failure["non_retryable"]) == ("NotFound", "order not found", True)
    assert "raise_chain" in failure["stack_trace"]
    cause = failure["cause"]
    assert cause is not None
    assert (cause["type"], cause["message"], cause["non_retryable"]) == ("KeyError", "'missing'", False)
    assert cause["cause"] is None


def test_round_trip_rebuilds_the_cause_chain() -> None:
    failure = failure_from_exception(raise_chain())
    err = exception_from_failure(failure)
    assert isinstance(err, ApplicationError)
    assert (err.type, err.message, err.non_retryable) == ("NotFound", "order not found", True)
    assert isinstance(err.__cause__, ApplicationError) and err.__cause__.type == "KeyError"
    assert err.__cause__.__cause__ is None
    # Re-encoding keeps the original stack trace, not the rebuilt exception's (it has none).
    assert failure_from_exception(err) == failure
    assert any("raise_chain" in note for note in err.__notes__)


def test_exception_without_traceback_and_cycle_is_bounded() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    failure = failure_from_exception(a)
    depth = 0
    node = failure
    while node is not None:
        depth += 1
        assert node["stack_trace"] == ""
        node = node["cause"]
    assert depth == MAX_CAUSE_DEPTH
