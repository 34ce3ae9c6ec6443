"""Operator verbs: `processor show`, `describe`, `history`, `dlq list|redrive`.

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

from processor import payloads
from processor._visibility.record import jsonable_event

OUTPUTS = ("table", "json", "jsonl")


def _ts(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _json(value: Any) -> str:
    return json.dumps(jsonable_event(value), default=str, ensure_ascii=False)


def _with_client(args: argparse.Namespace, read: Callable[[Any], Any]) -> Any:
    """`read(client)` with a Client on the checked broker, closed after."""
    from processor._cli_engine import _client

    client = _client(args)
    try:
        return read(client)
    finally:
        client.close()


def cmd_show(args: argparse.Namespace) -> int:
    from processor._answers import summarize

    history = _with_client(args, lambda c: c.history(args.id, run_id=args.run_id))
    if not history:
        print(f"no workflow with id {args.id!r}" + (f" and run {args.run_id}" if args.run_id else ""))
        return 1
    summary = summarize(history)  # from the history just read: one read, not two
    print(f"workflow {args.id}")
    for key in ("run_id", "workflow_type", "status", "task_queue", "last_seq", "held", "pending_activities"):
        print(f"  {key:20} {summary.get(key)}")
    print(f"  {'started':20} {_ts(summary['start_ms'])}")
    if summary.get("close_ms"):
        print(f"  {'closed':20} {_ts(summary['close_ms'])}")
    for key in ("search_attributes", "memo"):
        if summary.get(key):
            print(f"  {key:20} {json.dumps(summary[key], default=str, ensure_ascii=False)}")
    print("history:")
    for ev in history:
        print(f"  {ev['seq']:>4}  {_ts(ev['time_ms'])}  {ev['type']:24} {'' if args.full else _brief(ev)}")
        if args.full:
            _print_full(ev)
    return 0


def _print_full(ev: dict[str, Any]) -> None:
    """An event's every field: payloads as their JSON values, failures with their stack traces."""
    for key, value in ev.items():
        if key in ("type", "seq", "time_ms") or value is None:
            continue
        failure = value if isinstance(value, dict) and "stack_trace" in value else None
        shown = jsonable_event({k: v for k, v in value.items() if k != "stack_trace"} if failure else value)
        print(f"        {key}: {json.dumps(shown, default=str, ensure_ascii=False)}")
        while failure is not None:
            for line in (failure.get("stack_trace") or "").rstrip().splitlines():
                print(f"          | {line}")
            failure = failure.get("cause")
            if failure is not None:
                print(f"          caused by {failure.get('type')}: {failure.get('message')}")


def _brief(ev: dict[str, Any]) -> str:
    skip = {"type", "seq", "time_ms", "workflow_id", "random_seed", "request_id"}
    parts = []
    for k, v in ev.items():
        if k in skip or v is None:
            continue
        if isinstance(v, dict) and "encoding" in v:
            v = _payload_text(v)
        elif isinstance(v, list) and v and isinstance(v[0], dict) and "encoding" in v[0]:
            v = "[" + ", ".join(_payload_text(p) for p in v) + "]"
        elif isinstance(v, dict) and "message" in v:
            v = f"{v.get('type')}: {v.get('message')}"
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _payload_text(p: dict[str, Any]) -> str:
    p, unopened = payloads.opened(p)  # type: ignore[arg-type, assignment]
    if unopened is not None:
        return payloads.describe(p)  # type: ignore[arg-type]
    if p["encoding"] == "json/plain":
        text: str = p["data"].decode()
        return text if len(text) < 80 else text[:77] + "..."
    return f"<{p['encoding']} {len(p['data'])} bytes>"


def cmd_describe(args: argparse.Namespace) -> int:
    summary = _with_client(args, lambda c: c.describe(args.id, run_id=args.run_id))
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
    out = jsonable_event(value)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in out.items()} \
        if isinstance(out, dict) else out


def cmd_history(args: argparse.Namespace) -> int:
    from processor.replayer import history_to_json

    events = _with_client(args, lambda c: c.history(args.id, run_id=args.run_id))
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
    p = sub.add_parser("show", help="a workflow's summary and full history")
    add_common(p)
    p.add_argument("id")
    p.add_argument("--run-id", help="which run (default: the latest)")
    p.add_argument("--full", action="store_true", help="every field of every event: whole payloads and stack traces")
    p.set_defaults(func=cmd_show)

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
