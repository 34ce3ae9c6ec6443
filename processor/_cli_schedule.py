"""`processor schedule create|list|describe|pause|unpause|trigger|delete` (processor/schedule.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from processor._cli_engine import _client, _json_args

Sub = Any  # argparse's private _SubParsersAction


def cmd_schedule_create(args: argparse.Namespace) -> int:
    from processor.exceptions import WorkflowAlreadyStartedError
    from processor.schedule import schedule_spec

    values = _json_args(args.input)
    schedule_spec(args.id, args.type, tuple(values), cron=args.cron, every=args.every, offset=0.0, jitter=args.jitter,
                  overlap=args.overlap, catchup_window=args.catchup_window, task_queue=args.task_queue,
                  execution_timeout=None, paused=args.paused, note="")  # a bad spec is told before connecting
    client = _client(args)
    try:
        client.create_schedule(args.id, args.type, *values, cron=args.cron, every=args.every, jitter=args.jitter,
                               overlap=args.overlap, catchup_window=args.catchup_window,
                               task_queue=args.task_queue, paused=args.paused)
    except WorkflowAlreadyStartedError:
        print(f"schedule {args.id!r} exists: `processor schedule describe {args.id}`; delete it first to replace it",
              file=sys.stderr)
        return 1
    finally:
        client.close()
    what = f"cron {args.cron!r} (UTC)" if args.cron else f"every {args.every:g} s"
    print(f"schedule {args.id!r}: {args.type} {what}, overlap {args.overlap}; its workflows are "
          f"{args.id}-<time>{' (paused)' if args.paused else ''}")
    return 0


def cmd_schedule_describe(args: argparse.Namespace) -> int:
    from processor.exceptions import WorkflowNotFoundError

    client = _client(args)
    try:
        print(json.dumps(client.get_schedule_handle(args.id).describe(), indent=2))
    except WorkflowNotFoundError:
        print(f"no schedule {args.id!r}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def cmd_schedule_list(args: argparse.Namespace) -> int:
    """The live schedules, from the visibility service and each schedule's describe query."""
    import os

    client = _client(args)
    try:
        client.visibility_url = args.visibility_url or os.environ.get("DP_VISIBILITY_URL") or client.visibility_url
        found = client.list_schedules()
    finally:
        client.close()
    if args.output == "json":
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no live schedule")
        return 0
    print(f"{'SCHEDULE':24} {'WORKFLOW TYPE':20} {'WHEN':22} {'STATE':8} {'NEXT FIRING':22} FIRED RUNNING")
    for s in found:
        if "error" in s:
            print(f"{s['schedule_id']:24} (no answer: {s['error']})")
            continue
        when = f"cron {s['cron']}" if s["cron"] else f"every {s['every_s']:g} s"
        state = "paused" if s["paused"] else "active"
        print(f"{s['schedule_id']:24} {s['workflow_type']:20} {when:22} {state:8} {s['next_fire_time'] or '-':22} "
              f"{s['fired']:5} {s['running']:7}")
    return 0


def cmd_schedule_signal(args: argparse.Namespace) -> int:
    from processor.exceptions import CommandRejectedError, WorkflowNotFoundError

    client = _client(args)
    try:
        handle = client.get_schedule_handle(args.id)
        call: Callable[[], None] = {"pause": lambda: handle.pause(args.note),
                                    "unpause": lambda: handle.unpause(args.note),
                                    "trigger": handle.trigger, "delete": handle.delete}[args.verb]
        call()
    except (WorkflowNotFoundError, CommandRejectedError):
        print(f"no live schedule {args.id!r} (never created, or deleted)", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"schedule {args.id!r}: {args.verb}{'d' if args.verb.endswith('e') else 'ed'}")
    return 0


def register(sub: Sub, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    from processor.schedule import OVERLAP_POLICIES

    top = sub.add_parser("schedule", help="start a workflow on a cron expression or an interval")
    verbs = top.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("create", help="create a schedule")
    add_common(p)
    p.add_argument("id", help="the schedule's id; its workflows are <id>-<firing time>")
    p.add_argument("type", help="workflow type name")
    p.add_argument("--input", help="JSON: one argument, or a JSON list of arguments")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="five fields, UTC: e.g. '0 9 * * MON-FRI'")
    when.add_argument("--every", type=float, help="seconds between firings (aligned to the epoch)")
    p.add_argument("--jitter", type=float, default=0.0, help="each firing waits a random extra time below this (s)")
    p.add_argument("--overlap", choices=OVERLAP_POLICIES, default="skip",
                   help="a firing while the previous one runs (default skip)")
    p.add_argument("--catchup-window", type=float, default=60.0,
                   help="a firing missed while no processor ran still starts if at most this late (s, default 60)")
    p.add_argument("--task-queue", default="default")
    p.add_argument("--paused", action="store_true", help="create it paused")
    p.set_defaults(func=cmd_schedule_create)
    p = verbs.add_parser("list", help="the live schedules (needs `processor ui`, the visibility service)")
    add_common(p)
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.add_argument("--visibility-url", help="the service (default DP_VISIBILITY_URL, else http://127.0.0.1:8233)")
    p.set_defaults(func=cmd_schedule_list)
    p = verbs.add_parser("describe", help="a schedule's spec, next firing, counts and recent firings (JSON)")
    add_common(p)
    p.add_argument("id")
    p.set_defaults(func=cmd_schedule_describe)
    for verb, text in (("pause", "stop firing until unpaused"), ("unpause", "fire again, from now on"),
                       ("trigger", "fire once now"), ("delete", "stop for good (its workflows run on)")):
        p = verbs.add_parser(verb, help=text)
        add_common(p)
        p.add_argument("id")
        if verb in ("pause", "unpause"):
            p.add_argument("--note", default="", help="why (shown by describe)")
        else:
            p.set_defaults(note="")
        p.set_defaults(func=cmd_schedule_signal)
