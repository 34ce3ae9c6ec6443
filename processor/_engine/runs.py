"""Runs: what a StartWorkflow does to a workflow id, as pure rules (no I/O, no engine state).

A workflow id names a sequence of runs; at most one runs at a time. A start either begins a new
run, attaches to the current one, or is refused, decided from the id's latest run (its Summary)
and the start's `id_reuse_policy` (the latest run is closed) and `if_exists` (it is running), as
Temporal's WorkflowIdReusePolicy and WorkflowIdConflictPolicy do. A retried start (same
request_id as the run's own start) always attaches: a client that timed out and sent again never
starts a second run by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processor._engine.state import Summary

ALLOW_DUPLICATE = "allow_duplicate"
ALLOW_DUPLICATE_FAILED_ONLY = "allow_duplicate_failed_only"
REJECT_DUPLICATE = "reject_duplicate"
TERMINATE_IF_RUNNING = "terminate_if_running"
ID_REUSE_POLICIES = (ALLOW_DUPLICATE, ALLOW_DUPLICATE_FAILED_ONLY, REJECT_DUPLICATE, TERMINATE_IF_RUNNING)

USE_EXISTING = "use_existing"
FAIL = "fail"
IF_EXISTS = (USE_EXISTING, FAIL)

# Outcomes of a start, as CommandReply.outcome says them.
STARTED = "started"
ATTACHED = "attached"
REFUSED = "refused"


@dataclass(frozen=True)
class StartDecision:
    outcome: str  # STARTED, ATTACHED or REFUSED
    message: str = ""
    terminate_running: bool = False  # STARTED only: terminate the running run first


def policy_problem(id_reuse_policy: str, if_exists: str) -> str | None:
    """What is wrong with a start's policies, in words that say what to use; None if nothing."""
    if id_reuse_policy not in ID_REUSE_POLICIES:
        return f"id_reuse_policy {id_reuse_policy!r} is not one of {', '.join(ID_REUSE_POLICIES)}"
    if if_exists not in IF_EXISTS:
        return f"if_exists {if_exists!r} is not one of {', '.join(IF_EXISTS)}"
    return None


def decide_start(latest: Summary | None, rec: dict[str, Any]) -> StartDecision:
    """What a (valid) StartWorkflow record does, given the id's latest run (None: never ran)."""
    if latest is None:
        return StartDecision(STARTED)
    request_id = rec.get("request_id")
    if request_id and request_id == latest.request_id:
        return StartDecision(ATTACHED, "the same request started this run")
    policy = rec.get("id_reuse_policy") or ALLOW_DUPLICATE
    run = f"run {latest.run_id}" if latest.run_id else "its run"
    if latest.running:
        if policy == TERMINATE_IF_RUNNING:
            return StartDecision(STARTED, terminate_running=True)
        if (rec.get("if_exists") or USE_EXISTING) == FAIL:
            return StartDecision(REFUSED, f"workflow {latest.workflow_id!r} is already running ({run}) and the start "
                                          "says if_exists=fail")
        return StartDecision(ATTACHED, f"workflow {latest.workflow_id!r} is already running ({run})")
    if policy == REJECT_DUPLICATE:
        return StartDecision(REFUSED, f"workflow {latest.workflow_id!r} already ran ({run}, {latest.status}) and the "
                                      "start says id_reuse_policy=reject_duplicate")
    if policy == ALLOW_DUPLICATE_FAILED_ONLY and latest.status == "completed":
        return StartDecision(REFUSED, f"workflow {latest.workflow_id!r} already completed ({run}) and the start says "
                                      "id_reuse_policy=allow_duplicate_failed_only")
    return StartDecision(STARTED)
