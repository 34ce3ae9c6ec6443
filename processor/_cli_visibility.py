"""`processor ui`, `processor list`, `processor count`: the visibility service and its reads."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUTPUTS = ("table", "json", "jsonl")


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from processor._visibility import faust_app
    except ImportError as exc:
        from processor.exceptions import ConfigError

        raise ConfigError(f"processor ui needs faust-streaming ({exc.name} is missing): "
                          "pip install 'durable-processor[ui]'") from None
    from processor.cli import reachable_bootstrap

    bootstrap = reachable_bootstrap(args.bootstrap)
    state = Path(args.state_dir or os.environ.get("DP_VISIBILITY_STATE_DIR") or ".state-visibility")
    return faust_app.run(bootstrap, args.prefix, state, args.host, args.port, verbose=args.verbose)


def _visibility(args: argparse.Namespace) -> Any:
    from processor._visibility.http import VisibilityClient

    return VisibilityClient(args.visibility_url)


def cmd_list(args: argparse.Namespace) -> int:
    rows = _visibility(args).rows(args.query, page_size=min(args.limit or 1000, 1000), limit=args.limit)
    if args.output == "jsonl":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False), flush=False)
        return 0
    listed = list(rows)
    if args.output == "json":
        print(json.dumps(listed, indent=2, ensure_ascii=False))
        return 0
    columns = [("WORKFLOW ID", "workflow_id"), ("TYPE", "workflow_type"), ("STATUS", "status"),
               ("START", "start_time"), ("CLOSE", "close_time"), ("RUN", "run_id")]
    table = [[_cell(r.get(key)) for _, key in columns] for r in listed]
    widths = [max([len(title)] + [len(row[i]) for row in table]) for i, (title, _) in enumerate(columns)]
    print("  ".join(title.ljust(w) for (title, _), w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not listed:
        print("(no workflows match)", file=sys.stderr)
    return 0


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and value[:2] == "20" and value.endswith("Z"):  # a time: 2026-12-03 08:41:41.123
        return value.replace("T", " ").removesuffix("Z")
    return str(value)


def cmd_count(args: argparse.Namespace) -> int:
    counted = _visibility(args).count(args.query)
    if args.output == "table":
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(counted["by_status"].items()))
        print(f"{counted['count']}" + (f" ({by_status})" if by_status else ""))
    else:
        print(json.dumps(counted))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    from processor._visibility.http import DEFAULT_PORT

    p = sub.add_parser("ui", help="the visibility service: a projection of wf.events, its JSON API and web UI")
    add_common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    p.add_argument("--state-dir", help="its RocksDB tables (default .state-visibility; DP_VISIBILITY_STATE_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="log faust's progress")
    p.set_defaults(func=cmd_ui)

    for name, fn, text in (("list", cmd_list, "list workflows a query matches (from the visibility service)"),
                           ("count", cmd_count, "count workflows a query matches, by status")):
        p = sub.add_parser(name, help=text, description="QUERY is like Temporal's: WorkflowType = 'OrderWorkflow' "
                           "AND ExecutionStatus = 'Running' AND CustomerId = 'c1' ORDER BY StartTime DESC "
                           "(docs/visibility.md)")
        p.add_argument("query", nargs="?", help="list query (default: every workflow)")
        p.add_argument("--output", "-o", choices=OUTPUTS, default="table")
        p.add_argument("--visibility-url", help="the service (default DP_VISIBILITY_URL, else http://127.0.0.1:8233)")
        if name == "list":
            p.add_argument("--limit", type=int, help="at most this many")
        p.set_defaults(func=fn)
