"""Activity retry decisions: the default policy and exponential backoff."""

from __future__ import annotations

from typing import Any

# Temporal's defaults: retry forever with capped exponential backoff unless told otherwise.
DEFAULT_POLICY: dict[str, Any] = {
    "initial_interval_ms": 1_000,
    "backoff_coefficient": 2.0,
    "maximum_interval_ms": 100_000,
    "maximum_attempts": 0,
    "non_retryable_error_types": [],
}


def next_retry_delay_ms(policy: dict[str, Any] | None, attempt: int, failure: dict[str, Any]) -> int | None:
    """Milliseconds until the next attempt, or None when the failure is final."""
    policy = policy or DEFAULT_POLICY
    if failure.get("non_retryable") or failure.get("type") in policy["non_retryable_error_types"]:
        return None
    maximum = policy["maximum_attempts"]
    if maximum and attempt >= maximum:
        return None
    cap = policy["maximum_interval_ms"] or 100 * policy["initial_interval_ms"]
    try:
        delay = policy["initial_interval_ms"] * policy["backoff_coefficient"] ** (attempt - 1)
    except OverflowError:  # attempt ~1000 of an unlimited policy: long past the cap
        return int(cap)
    return int(min(delay, cap))
