"""CLI verbs that run or inspect workflows: run, dev, start, show, replay, signal, cancel, terminate."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from processor._engine.runs import ID_REUSE_POLICIES, IF_EXISTS
from processor._kafka import config as kafka_config
from processor.exceptions import ConfigError, NoReplyError, ProcessorError, WorkflowFailureError

Sub = argparse._SubParsersAction  # noqa: SLF001 - argparse exposes no public name for it


def _settings(args: argparse.Namespace) -> Any:
    from processor._engine.settings import Settings
    from processor.cli import reachable_bootstrap

    explicit = getattr(args, "state_dir", None)
    state_dir = Path(explicit) if explicit else Path(os.environ.get("DP_STATE_DIR", ".state"))
    return Settings(bootstrap=reachable_bootstrap(args.bootstrap), prefix=args.prefix, state_dir=state_dir)


def _client(args: argparse.Namespace) -> Any:
    """A Client on a broker known to answer and to hold this prefix's topics: without the checks
    a Client's first send would wait 30 s, librdkafka logging each failed connect."""
    from processor._kafka.topics import TopicNames, require_reachable
    from processor.cli import prog, resolve_bootstrap
    from processor.client import Client

    bootstrap = resolve_bootstrap(args.bootstrap)
    listed = require_reachable(bootstrap)
    names = TopicNames(args.prefix)
    missing = [t for t in (names.commands, names.events, names.completions, names.replies) if t not in listed]
    if missing:
        raise ProcessorError(
            f"Kafka at {bootstrap} has no topic {', '.join(missing)}: run `{prog()} topics create` first "
            f"(or pass the --prefix the topics were created with; this was --prefix {args.prefix})"
        )
    return Client(bootstrap, prefix=args.prefix)


def _json_args(text: str | None) -> list[Any]:
    if text is None:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProcessorError(f"--input is not JSON ({exc}); e.g. --input '{{\"sku\": \"A1\"}}'") from exc
    return value if isinstance(value, list) else [value]


def _logging(verbose: bool, fmt: str = "text", process: str = "") -> None:
    from processor import _logs

    _logs.setup(verbose, fmt, process)


def cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from processor._app import Child, child_argv, load_app, supervise
    from processor._engine.loop import HEARTBEAT_FILE, state_dir_for
    from processor._logs import log_format, say

    fmt = log_format(args.log_format)
    from processor import payloads

    payloads.chain()  # a bad DP_PAYLOAD_* setting is one line now, not a failure inside each workflow
    _logging(args.verbose, fmt, "supervisor" if args.role == "all" else f"{args.role}-{args.index}")
    app = load_app(args.app)
    from processor._engine.settings import metrics_port_from_env

    port = args.metrics_port if args.metrics_port is not None else metrics_port_from_env()
    last = port + (args.processors + args.workers - 1 if args.role == "all" else 0) if port is not None else 0
    if port is not None and not (0 < port and last < 65536):
        raise ConfigError(f"--metrics-port must leave a TCP port (1-65535) for each process; {port} gives them "
                          f"{port}-{last}")
    settings = replace(_settings(args), metrics_port=port if args.role != "all" else None)
    if args.role in ("processor", "worker"):
        from processor import _tracing

        traced = _tracing.setup_from_env(f"{args.role}")  # OTEL_* (processor/_tracing.py)
        try:
            if args.role == "processor":
                from processor._engine.loop import run_processor

                run_processor(settings.with_state_dir(state_dir_for(settings.state_dir, args.index)), app.workflows)
            else:
                from processor._engine.worker import run_worker

                run_worker(settings, app.activities, app.task_queue, app.max_concurrent_activities,
                           instance_dir=settings.state_dir / f"worker-{args.index}")
        finally:
            if traced:
                _tracing.shutdown()  # the spans still batched are exported
        return 0
    def metrics(k: int) -> list[str]:
        return ["--log-format", fmt, *(["--metrics-port", str(port + k)] if port is not None else [])]

    children = [Child("processor", i, child_argv(args.app, "processor", i, settings.bootstrap, settings.prefix,
                                                 settings.state_dir, args.verbose, metrics(i)),
                      heartbeat=state_dir_for(settings.state_dir, i) / HEARTBEAT_FILE) for i in range(args.processors)]
    if app.activities:
        children += [Child("worker", i, child_argv(args.app, "worker", i, settings.bootstrap, settings.prefix,
                                                   settings.state_dir, args.verbose, metrics(args.processors + i)))
                     for i in range(args.workers)]
    stop = threading.Event()
    _on_signals(stop.set)
    say(f"running {args.processors} processor(s) and {args.workers if app.activities else 0} worker(s) "
        f"for {args.app} on {settings.bootstrap} (prefix {settings.prefix}); Ctrl-C to stop", fmt, "supervisor")
    user = kafka_config.user_settings()
    shown = dict(kafka_config.redacted(user.common))
    for role, conf in user.roles.items():
        shown.update({f"[{role}] {k}": v for k, v in kafka_config.redacted(conf).items()})
    if shown:  # secrets shown as ***
        say("Kafka settings: " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())), fmt, "supervisor")
    if port is not None:
        last = port + args.processors + (args.workers if app.activities else 0) - 1
        say(f"Prometheus metrics on ports {port}-{last} (processors first), path /metrics", fmt, "supervisor")
    supervise(children, stop.is_set)
    return 0


def _on_signals(fn: Callable[[], None]) -> None:
    """Ctrl-C, SIGTERM and a closed terminal (SIGHUP) all stop a supervisor the same way: its
    children run in their own process groups (processor/_app.py), so only it hears the terminal."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: fn())


def cmd_start(args: argparse.Namespace) -> int:
    """Exit 0 when a run was started or the id's running run attached to (the output says which),
    1 when the start was refused (the existing run is named)."""
    from processor.exceptions import WorkflowAlreadyStartedError

    args_list = _json_args(args.input)  # a bad --input fails before anything is sent
    signal_args = _json_args(args.signal_input)
    client = _client(args)
    try:
        try:
            handle = client.start_workflow(args.type, *args_list, id=args.id, task_queue=args.task_queue,
                                           id_reuse_policy=args.id_reuse_policy, if_exists=args.if_exists,
                                           start_signal=args.signal, start_signal_args=signal_args,
                                           search_attributes=_named_values(args.search_attribute, "--search-attribute"),
                                           memo=_named_values(args.memo, "--memo"))
        except WorkflowAlreadyStartedError as exc:
            print(f"refused: {exc}; nothing started", file=sys.stderr)
            return 1
        if handle.outcome == "started":
            print(f"started {args.type} {handle.id} (run {handle.run_id})", flush=True)
        else:
            print(f"{handle.id} is already running (run {handle.run_id}): attached to it, nothing started "
                  "(--if-exists fail refuses instead)", flush=True)
        if args.wait:
            return _print_result(client, args.id, args.timeout, handle.run_id)
    finally:
        client.close()
    return 0


def _named_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """`NAME=JSON` options (a value that is not JSON is taken as a string) -> {NAME: value}."""
    from processor.exceptions import ConfigError

    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{flag} {item!r}: write NAME=VALUE, e.g. {flag} CustomerId=c1")
        try:
            out[name] = json.loads(text)
        except ValueError:
            out[name] = text
    return out


def _print_result(client: Any, workflow_id: str, timeout: float, run_id: str | None = None) -> int:
    from processor.cli import EXIT_STILL_RUNNING, prog

    try:
        result = client.result(workflow_id, timeout=timeout, run_id=run_id)
    except WorkflowFailureError as exc:
        print(f"{workflow_id}: {exc}")
        return 1
    except TimeoutError:
        print(f"workflow {workflow_id} still running after {timeout:g}s; it goes on; check with "
              f"`{prog()} show {workflow_id}`", file=sys.stderr)
        return EXIT_STILL_RUNNING
    print(f"{workflow_id}: completed -> {json.dumps(result)}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from processor._app import load_app
    from processor.exceptions import NondeterminismError
    from processor.replayer import Replayer

    app = load_app(args.app)
    if args.file:
        from processor.replayer import history_from_json

        try:
            history = history_from_json(Path(args.file).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    else:
        if not args.id:
            raise ConfigError("say which workflow to replay: its ID, or --file HISTORY.jsonl "
                              "(`processor history ID -o jsonl` writes one)")
        client = _client(args)
        try:
            history = client.history(args.id, run_id=args.run_id)
        finally:
            client.close()
    if not history:
        print(f"no workflow with id {args.id!r}" + (f" and run {args.run_id}" if args.run_id else ""))
        return 1
    try:
        result = Replayer(workflows=list(app.workflows)).replay(history)
    except NondeterminismError as exc:
        print(f"NONDETERMINISTIC: {exc}")
        return 1
    print(f"replayed {len(history)} events of {history[0]['workflow_id']} against {args.app}: OK "
          f"(closed={result.closed}, commands not yet in history={len(result.commands_pending)})")
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    values = _json_args(args.input)
    return _answered(args, f"signal {args.name}", lambda c: c.signal(args.id, args.name, *values,
                                                                     run_id=args.run_id))


def cmd_query(args: argparse.Namespace) -> int:
    """Print the answer as JSON; exit 1 when there is none (no such workflow or query, the handler
    failed)."""
    from processor.exceptions import QueryFailedError, WorkflowNotFoundError

    values = _json_args(args.input)
    client = _client(args)
    try:
        answer = client.query(args.id, args.name, *values, run_id=args.run_id, timeout=args.timeout)
    except (WorkflowNotFoundError, QueryFailedError) as exc:
        print(f"no answer: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(answer))
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    """Print the update's result as JSON; exit 1 when it was rejected (nothing recorded) or failed."""
    from processor.exceptions import UpdateFailedError, UpdateRejectedError, WorkflowNotFoundError

    values = _json_args(args.input)
    client = _client(args)
    try:
        result = client.execute_update(args.id, args.name, *values, run_id=args.run_id, request_id=args.request_id,
                                       timeout=args.timeout)
    except UpdateRejectedError as exc:
        print(f"rejected (nothing recorded): {exc}", file=sys.stderr)
        return 1
    except (UpdateFailedError, WorkflowNotFoundError) as exc:
        print(f"{'failed' if isinstance(exc, UpdateFailedError) else 'not found'}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(result))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    verb = args.command
    return _answered(args, verb, lambda c: (c.terminate if verb == "terminate" else c.cancel)(
        args.id, args.reason, run_id=args.run_id))


def _answered(args: argparse.Namespace, what: str, send: Callable[[Any], None]) -> int:
    """Send a command and report the processor's answer: exit 0 delivered, 1 not (why)."""
    from processor.exceptions import CommandRejectedError, WorkflowNotFoundError

    client = _client(args)
    try:
        send(client)
    except (WorkflowNotFoundError, CommandRejectedError) as exc:
        print(f"not delivered: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"{what} delivered to {args.id}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Kafka, topics, one processor and one worker, and a demo. The broker is left running when
    dev ends (Ctrl-C or --once), so the next run starts at once and `processor show` can still
    read what the demo did; dev says so and how to stop it. The children are always stopped."""
    from processor._app import Child, child_argv, load_app, supervise
    from processor._kafka import local
    from processor._kafka.topics import ensure_topics, load_specs
    from processor.cli import EXIT_INTERRUPTED, prog
    from processor.client import Client

    load_app(args.app)  # fail fast, in this process and before Kafka starts, on a bad --app
    home = (Path(args.dir) if args.dir else local.default_home()).resolve()
    stop_hint = f"`{prog()} kafka stop" + ("" if home == local.default_home().resolve() else f" --dir {home}") + "`"
    try:
        info, started = local.start(home)
        print(f"Kafka {'started' if started else 'already running'} at {info.bootstrap} (data in {info.home})",
              flush=True)
        ensure_topics(info.bootstrap, load_specs(args.prefix), exact_partitions=False)
    except KeyboardInterrupt:
        print(f"interrupted before the processor started; Kafka may be running or still coming up in the "
              f"background (data in {home}); stop it with {stop_hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    state = Path(args.state_dir or Path(info.home).parent / "state")
    children = [Child("processor", 0, child_argv(args.app, "processor", 0, info.bootstrap, args.prefix, state)),
                Child("worker", 0, child_argv(args.app, "worker", 0, info.bootstrap, args.prefix, state))]
    stop = threading.Event()
    _on_signals(stop.set)
    runner = threading.Thread(target=supervise, args=(children, stop.is_set), kwargs={"grace": 10.0}, daemon=True)
    runner.start()
    code = 0
    if args.demo:
        client = Client(info.bootstrap, prefix=args.prefix)
        try:
            code = _demo(client, args.demo, stop.is_set)
        finally:
            client.close()
    if not args.once and not stop.is_set():
        print(f"processor and worker running; start more with `{prog()} start OrderWorkflow --id ... "
              "--input '{...}' --wait` -- Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            pass
    interrupted = stop.is_set()
    stop.set()
    runner.join()
    kept = f"Kafka keeps running at {info.bootstrap} (data in {info.home}); stop it with {stop_hint}"
    if interrupted:
        print(f"interrupted: stopped the processor and the worker; {kept}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    print(f"stopped the processor and the worker; {kept}", flush=True)
    return code


def _demo(client: Any, count: int, stopped: Callable[[], bool]) -> int:
    """Start `count` orders and print how each ends. Waits in short slices so that a Ctrl-C
    (which sets `stopped`) ends it at once; returns EXIT_INTERRUPTED then."""
    from processor.cli import EXIT_INTERRUPTED, prog

    run = datetime.now(UTC).strftime("%H%M%S")
    ids = []
    t0 = time.monotonic()
    for i in range(count):
        order = {"order_id": f"order-{run}-{i}", "sku": "SKU-1", "quantity": 1 + i % 3,
                 "card": "4000-0000-0000-0002" if i % 5 == 4 else "4242-4242-4242-4242"}
        client.start_workflow("OrderWorkflow", order, id=order["order_id"], wait_for_ack=False)
        ids.append(order["order_id"])
    client.flush()
    large = [(wid, i) for i, wid in enumerate(ids) if 1 + i % 3 >= 3]  # examples/orders.py: they wait for a person
    print(f"started {count} OrderWorkflow runs (every 5th with a card that is declined; {len(large)} large ones "
          "wait for approval)", flush=True)
    deadline = time.monotonic() + 120
    for n, (wid, _) in enumerate(large):
        if n == 0:  # what a large order is doing, asked while it waits (a query writes nothing)
            state: Any = None
            while time.monotonic() < deadline:
                if stopped():
                    return EXIT_INTERRUPTED
                try:  # short waits, so that a Ctrl-C is served at once
                    state = client.query(wid, "state", timeout=2)
                except NoReplyError:
                    continue
                if state["status"] == "awaiting approval":
                    break
                time.sleep(0.2)
            print(f"  {wid}: query state -> {json.dumps(state)}", flush=True)
        if n == len(large) - 1 and len(large) > 1:
            client.signal(wid, "reject", "over the customer's limit")
            print(f"  {wid}: signalled reject", flush=True)
        else:
            client.signal(wid, "approve", "demo-approver")
            print(f"  {wid}: signalled approve", flush=True)
    completed = 0
    for wid in ids:
        while True:
            if stopped():
                return EXIT_INTERRUPTED
            try:
                print(f"  {wid}: completed -> {json.dumps(client.result(wid, timeout=0.5))}", flush=True)
                completed += 1
            except WorkflowFailureError as exc:
                print(f"  {wid}: {exc}", flush=True)
            except TimeoutError:
                if time.monotonic() < deadline:
                    continue
                print(f"  {wid}: still running after 120s; check the processor's output above, and the "
                      f"workflow with `{prog()} show {wid}`", flush=True)
                return 1
            break
    print(f"{completed} completed, {count - completed} failed as designed (declined or rejected), in "
          f"{time.monotonic() - t0:.1f}s; "
          f"inspect one with `{prog()} show {ids[0]}`", flush=True)
    return 0


def register(sub: Sub[argparse.ArgumentParser], add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("run", help="run processors and activity workers of an app")
    add_common(p)
    p.add_argument("--app", required=True, help="module:attribute naming a processor.Worker")
    p.add_argument("--processors", type=int, default=1, help="processor processes (one per core)")
    p.add_argument("--workers", type=int, default=1, help="activity worker processes")
    p.add_argument("--role", choices=["all", "processor", "worker"], default="all",
                   help="run one process of one role in the foreground (what `all` starts and supervises)")
    p.add_argument("--index", type=int, default=0, help="with --role: which one (selects its state dir)")
    p.add_argument("--state-dir", help="RocksDB state (default .state or DP_STATE_DIR)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics (default DP_METRICS_PORT, else none): processor i on PORT+i, "
                        "worker j on PORT+PROCESSORS+j; with --role, this process on PORT")
    p.add_argument("--log-format", choices=["text", "json"], default=None,
                   help="text (default) or json: one JSON object a line, with workflow_id, run_id, workflow_type, "
                        "activity_type, activity_seq as fields (default DP_LOG_FORMAT)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dev", help="everything on the local broker: Kafka, topics, processor, worker, a demo")
    p.add_argument("--prefix", default=os.environ.get("DP_TOPIC_PREFIX", "wf"))
    p.add_argument("--app", default="examples.orders:app")
    p.add_argument("--dir", help="broker home (default ~/.durable-processor/kafka)")
    p.add_argument("--state-dir", help="processor state (default beside the broker home)")
    p.add_argument("--demo", type=int, default=10, help="start this many example orders (0: none)")
    p.add_argument("--once", action="store_true", help="exit after the demo instead of serving")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("start", help="start a workflow")
    add_common(p)
    p.add_argument("type", help="workflow type name")
    p.add_argument("--id", required=True)
    p.add_argument("--input", help="JSON: one argument, or a JSON list of arguments")
    p.add_argument("--task-queue", default="default")
    p.add_argument("--id-reuse-policy", default="allow_duplicate", choices=ID_REUSE_POLICIES,
                   help="when the id already ran and closed (default allow_duplicate: a new run)")
    p.add_argument("--if-exists", default="use_existing", choices=IF_EXISTS,
                   help="when the id is running (default use_existing: attach to it; fail: refuse, exit 1)")
    p.add_argument("--signal", help="signal-with-start: also deliver this signal to the run started or attached to")
    p.add_argument("--signal-input", help="JSON arguments of --signal")
    p.add_argument("--search-attribute", action="append", metavar="NAME=VALUE",
                   help="a search attribute (repeatable); VALUE is JSON (a number, true, a list of strings) or "
                        "else a string")
    p.add_argument("--memo", action="append", metavar="NAME=VALUE", help="a memo field (repeatable); VALUE as above")
    p.add_argument("--wait", action="store_true", help="wait for the result")
    p.add_argument("--timeout", type=float, default=300,
                   help="with --wait: seconds to wait (default 300); past it, exit 3 -- the workflow goes on")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("replay", help="replay a workflow's history against the app's current code")
    add_common(p)
    p.add_argument("id", nargs="?", help="the workflow (its history is read from the processor)")
    p.add_argument("--file", help="replay this history instead (JSON lines: `processor history ID -o jsonl`)")
    p.add_argument("--app", required=True)
    p.add_argument("--run-id", help="which run (default: the latest)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("signal", help="send a signal to a running workflow")
    add_common(p)
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--input", help="JSON: one argument, or a JSON list of arguments")
    p.add_argument("--run-id", help="only if this is the current run")
    p.set_defaults(func=cmd_signal)

    p = sub.add_parser("query", help="ask a workflow's query handler (prints the answer as JSON)")
    add_common(p)
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--input", help="JSON: one argument, or a JSON list of arguments")
    p.add_argument("--run-id", help="only if this is the latest run")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("update", help="run a workflow's update handler (prints its result as JSON)")
    add_common(p)
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--input", help="JSON: one argument, or a JSON list of arguments")
    p.add_argument("--run-id", help="only if this is the current run")
    p.add_argument("--request-id", help="the update's id: sending the same id again returns the first outcome")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the result (default 60)")
    p.set_defaults(func=cmd_update)

    for verb in ("cancel", "terminate"):
        p = sub.add_parser(verb, help=f"{verb} a running workflow")
        add_common(p)
        p.add_argument("id")
        p.add_argument("--reason", default="")
        p.add_argument("--run-id", help="only if this is the current run")
        p.set_defaults(func=cmd_cancel)
