"""Operator verbs: `processor describe`, `processor history`, `processor dlq list|redrive`.

describe and history ask the processor that owns the workflow (the built-in __history query), so
they answer in milliseconds however much history the partition holds. `history --output jsonl`
writes the form `Replayer.replay_json` and `processor replay --file` read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

OUTPUTS = ("table", "json", "jsonl")


def _ts(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _json(value: Any) -> str:
    from processor._visibility.record import jsonable_event

    return json.dumps(jsonable_event(value), default=str, ensure_ascii=False)


def cmd_describe(args: argparse.Namespace) -> int:
    from processor._cli_engine import _client

    client = _client(args)
    try:
        summary = client.describe(args.id, run_id=args.run_id)
    finally:
        client.close()
    if args.output == "json":
        print(json.dumps(_jsonable(summary), indent=2, default=str, ensure_ascii=False))
        return 0
    for key, value in summary.items():
        if key in ("start_ms", "close_ms"):
            value = _ts(value)
        elif isinstance(value, dict | list):
            value = _json(value)
        print(f"{key:20} {value}")
    return 0


def _jsonable(value: Any) -> Any:
    from processor._visibility.record import jsonable_event

    out = jsonable_event(value)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in out.items()} \
        if isinstance(out, dict) else out


def cmd_history(args: argparse.Namespace) -> int:
    from processor._cli_engine import _client
    from processor.replayer import history_to_json

    client = _client(args)
    try:
        events = client.history(args.id, run_id=args.run_id)
    finally:
        client.close()
    if not events:
        print(f"error: no workflow with id {args.id!r}" + (f" and run {args.run_id}" if args.run_id else ""),
              file=sys.stderr)
        return 1
    if args.output == "jsonl":
        sys.stdout.write(history_to_json(events))
    elif args.output == "json":
        print(json.dumps([json.loads(line) for line in history_to_json(events).splitlines()], indent=2))
    else:
        for ev in events:
            details = {k: v for k, v in ev.items() if k not in ("type", "seq", "time_ms", "workflow_id")}
            print(f"{ev['seq']:>5}  {_ts(ev['time_ms'])}  {ev['type']:26} {_json(details)}")
    return 0


def _dead_letters(args: argparse.Namespace) -> Any:
    from processor._dlq import DeadLetters
    from processor.cli import reachable_bootstrap

    return DeadLetters(reachable_bootstrap(args.bootstrap), args.prefix)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    dlq = _dead_letters(args)
    letters = dlq.all(args.limit)
    views = [d.view(dlq.codec) for d in letters]
    if args.output == "json":
        print(json.dumps(views, indent=2, ensure_ascii=False))
    elif args.output == "jsonl":
        for view in views:
            print(json.dumps(view, ensure_ascii=False))
    else:
        print(f"{'AT':9} {'WHEN':23} {'FROM':28} {'KEY':24} {'RECORD':30} REASON")
        for v in views:
            kind = (v["record_type"] or "(undecodable)").rpartition(".")[2]
            print(f"{v['dlq_partition']}:{v['dlq_offset']:<7} {_ts(v['at']):23} {v['from']:28} "
                  f"{(v['key'] or '')[:24]:24} {kind[:30]:30} {v['reason']}")
        print(f"{len(views)} record(s) in {dlq.topics.dlq}" + (f" (first {args.limit})" if args.limit else ""))
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from processor._dlq import parse_at
    from processor.exceptions import ConfigError

    if bool(args.all) == bool(args.at):
        raise ConfigError("say which records to redrive: --all (every record since the last --all) or "
                          "--at PARTITION:OFFSET (repeatable, as `processor dlq list` shows)")
    dlq = _dead_letters(args)
    go, skipped = dlq.redrive([parse_at(a) for a in args.at or []], everything=args.all, dry_run=args.dry_run)
    verb = "would redrive" if args.dry_run else "redriven"
    for d in go:
        print(f"{verb} {d.partition}:{d.offset} -> {dlq.topics.commands} (key {d.key.decode(errors='replace')!r}; "
              f"it was: {d.reason})")
    for d, why in skipped:
        print(f"skipped {d.partition}:{d.offset}: {why}")
    print(f"{len(go)} record(s) {verb}, {len(skipped)} skipped")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("describe", help="a workflow's summary (status, pending activities, attributes, ...)")
    add_common(p)
    p.add_argument("id")
    p.add_argument("--run-id", help="which run (default: the latest)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("history", help="a workflow's events; --output jsonl is what Replayer reads")
    add_common(p)
    p.add_argument("id")
    p.add_argument("--run-id", help="which run (default: the latest)")
    p.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    p.set_defaults(func=cmd_history)

    dlq = sub.add_parser("dlq", help="the dead-letter topic: list what could not be applied, redrive it after a fix")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True)
    p = dsub.add_parser("list", help="every dead-lettered record, with where it came from and why")
    add_common(p)
    p.add_argument("--limit", type=int, help="at most this many")
    p.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    p.set_defaults(func=cmd_dlq_list)
    p = dsub.add_parser("redrive", help="put dead-lettered commands back on the commands topic")
    add_common(p)
    p.add_argument("--all", action="store_true",
                   help="every record since the last --all (exactly once: a second run redrives nothing)")
    p.add_argument("--at", action="append", metavar="P:O", help="the DLQ record at partition P, offset O (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="say what would go where; send nothing")
    p.set_defaults(func=cmd_dlq_redrive)
