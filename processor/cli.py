"""The `processor` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException

from processor._kafka import cluster, local
from processor._kafka import config as kafka_config
from processor._kafka.topics import DEFAULT_PREFIX, TopicSpec, describe, ensure_topics, load_specs, require_reachable
from processor.exceptions import ProcessorError

# Exit codes: 0 done; 1 a negative answer (the workflow failed, no such workflow, not running);
# 2 an error the message explains; 3 `start --wait` gave up while the workflow still runs;
# 70 a bug of ours (one line; DP_TRACEBACK=1 shows the traceback); 130 interrupted (Ctrl-C).
EXIT_ERROR = 2
EXIT_STILL_RUNNING = 3
EXIT_BUG = 70
EXIT_INTERRUPTED = 130


def prog() -> str:
    """The command as the user typed it, for hints: `.venv/bin/processor` when run by that path."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "processor" and os.sep in argv0:
        return argv0
    return "processor"


def resolve_bootstrap(explicit: str | None) -> str:
    """--bootstrap, else KAFKA_BOOTSTRAP, else the local broker started by `processor kafka start`."""
    if explicit:
        return explicit
    env = os.environ.get("KAFKA_BOOTSTRAP")
    if env:
        return env
    info = local.running(local.default_home())
    if info is not None:
        return info.bootstrap
    raise ProcessorError(
        f"no Kafka broker: pass --bootstrap HOST:PORT, set KAFKA_BOOTSTRAP, or run `{prog()} kafka start`"
    )


def reachable_bootstrap(explicit: str | None) -> str:
    """`resolve_bootstrap`, checked: a broker that does not answer is one line within seconds."""
    bootstrap = resolve_bootstrap(explicit)
    require_reachable(bootstrap)
    return bootstrap


def _home(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else local.default_home()


def cmd_kafka_start(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if args.brokers > 1 or cluster.is_cluster(_home(args)):
        if args.secure or args.port is not None:
            raise ProcessorError("--secure and --port are for a single broker; a cluster picks its nodes' ports")
        where = _home(args)
        servers, now = cluster.start_cluster(where, args.brokers)
        if now:
            copies, isr = cluster.replication_of(args.brokers)
            print(f"Kafka {local.KAFKA_VERSION}: started node(s) {', '.join(map(str, now))} of a {args.brokers}-node "
                  f"cluster in {time.monotonic() - t0:.1f}s (replication {copies}, min.insync.replicas {isr}; "
                  f"data in {where})")
        else:
            print(f"the {args.brokers}-node Kafka cluster in {where} is running; nothing to do")
        print(f"bootstrap: {servers}")
        return 0
    info, started = local.start(_home(args), port=args.port, secure=args.secure)
    if started:
        took = time.monotonic() - t0
        print(f"Kafka {local.KAFKA_VERSION} started in {took:.1f}s (pid {info.pid}, data in {info.home})")
    else:
        print(f"Kafka already running (pid {info.pid}, data in {info.home}); nothing to do")
        if args.secure and not info.secure:
            print(f"note: it runs without --secure; stop it first (`{prog()} kafka stop`) to restart it secured")
    print(f"bootstrap: {info.bootstrap}")
    if info.secure:
        print(f"SASL_SSL (SCRAM-SHA-512, TLS): pass --kafka-config {Path(info.home) / 'client.properties'}")
    return 0


def cmd_kafka_stop(args: argparse.Namespace) -> int:
    if cluster.is_cluster(_home(args)):
        stopped = cluster.stop_cluster(_home(args))
        print(f"Kafka nodes {', '.join(map(str, stopped))} stopped" if stopped else "Kafka was not running")
        return 0
    info = local.stop(_home(args))
    print("Kafka stopped" if info else "Kafka was not running")
    return 0


def cmd_kafka_status(args: argparse.Namespace) -> int:
    home = _home(args)
    if cluster.is_cluster(home):
        nodes, up = cluster.node_infos(home), cluster.running_nodes(home)
        if not nodes:
            print(f"the Kafka cluster in {home} has not started (no node recorded)")
            return 1
        for n, i in sorted(nodes.items()):
            state = f"running (pid {i.pid})" if n in up else "down"
            print(f"node {n}: {state}, 127.0.0.1:{i.port}, controller 127.0.0.1:{i.controller_port}, data in {i.home}")
        print(f"bootstrap: {cluster.bootstrap(nodes)}")
        return 0 if len(up) == len(nodes) else 1
    info = local.running(home)
    if info is None:
        print(f"Kafka not running (home {home})")
        return 1
    print(f"Kafka {local.KAFKA_VERSION} running: pid {info.pid}, bootstrap {info.bootstrap}, "
          f"controller 127.0.0.1:{info.controller_port}, data in {info.home}")
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    bootstrap = reachable_bootstrap(args.bootstrap)
    specs = load_specs(args.prefix, args.partitions)
    if args.dry_run:
        return _topics_plan(bootstrap, specs)
    created = ensure_topics(bootstrap, specs)
    from processor._kafka.control import read_layout, write_layout
    from processor._kafka.topics import TopicNames

    names = TopicNames(args.prefix)
    if read_layout(bootstrap, names.control)[0] is None:  # the layout growth starts from (engine/growth.py)
        from processor._engine.growth import Layout

        write_layout(bootstrap, names.control, Layout(next(s.partitions for s in specs if s.name == names.commands)))
    for s in specs:
        state = "created" if s.name in created else "exists, matches"
        print(f"{s.name:32} {s.partitions:>4} partitions  {s.configs.get('cleanup.policy', ''):8} {state}")
    return 0


def cmd_topics_scale(args: argparse.Namespace) -> int:
    from processor._kafka.scale import scale

    if args.partitions is None:
        raise ProcessorError("topics scale needs --partitions N (a whole multiple of the current count)")
    bootstrap = reachable_bootstrap(args.bootstrap)
    if scale(bootstrap, args.prefix, args.partitions, args.timeout, print):
        print(f"done: commands, events and timers have {args.partitions} partitions; every moved workflow is home")
        return 0
    print(f"still handing off after {args.timeout:g}s: the growth goes on while processors run; "
          f"`{prog()} topics scale --partitions {args.partitions}` again reports it", file=sys.stderr)
    return 1


def _topics_plan(bootstrap: str, specs: list[TopicSpec]) -> int:
    """What `topics create` would do, creating nothing (for GitOps: review, then apply)."""
    from processor._kafka.topics import admin_client, creation

    md = admin_client(bootstrap).list_topics(timeout=10)
    brokers = len(md.brokers)
    print(f"# {len(md.brokers)} broker(s); nothing is created (--dry-run)")
    for s in specs:
        if s.name in md.topics and md.topics[s.name].error is None:
            print(f"exists   {s.name} ({len(md.topics[s.name].partitions)} partitions)")
            continue
        rf, configs = creation(s, brokers)
        shown = " ".join(f"{k}={v}" for k, v in sorted(configs.items()))
        print(f"create   {s.name} partitions={s.partitions} replication.factor={rf} {shown}")
    return 0


def cmd_topics_describe(args: argparse.Namespace) -> int:
    bootstrap = reachable_bootstrap(args.bootstrap)
    rows = describe(bootstrap, load_specs(args.prefix, args.partitions))
    print(f"{'topic':32} {'partitions declared/live':>26}  config: declared / live")
    for r in rows:
        declared, live_count = r["partitions"]
        live_s = str(live_count) if r["exists"] else "MISSING"
        print(f"{r['topic']:32} {declared:>12} / {live_s:<11}")
        for key, (want, have) in r["configs"].items():
            mark = "" if want == have or not r["exists"] else "   <-- differs"
            print(f"{'':34}{key} = {want} / {have}{mark}")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP or the local broker)")
    p.add_argument("--prefix", default=os.environ.get("DP_TOPIC_PREFIX", DEFAULT_PREFIX),
                   help="topic name prefix (default: wf)")
    p.add_argument("--no-create", action="store_true",
                   help="never create topics (clusters where only administrators do): a missing one is an error; "
                        "also DP_NO_CREATE=1")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client settings for every client (.properties, or .toml with [producer], [consumer], "
                        "[admin] tables); also DP_KAFKA_CONFIG, and DP_KAFKA_<SETTING> variables")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="processor", description="durable-processor: durable workflows on Kafka")
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="run a local Kafka broker, or a cluster of them (no Docker needed)")
    ksub = kafka.add_subparsers(dest="kafka_command", required=True)
    for name, fn, text in [
        ("start", cmd_kafka_start, "start the broker (fetches jars on first use)"),
        ("stop", cmd_kafka_stop, "stop it cleanly"),
        ("status", cmd_kafka_status, "say what runs where"),
    ]:
        p = ksub.add_parser(name, help=text)
        p.add_argument("--dir", help="broker home: config, data, logs (default ~/.durable-processor/kafka)")
        if name == "start":
            p.add_argument("--port", type=int, help="client port (default 9092, or a free one)")
            p.add_argument("--brokers", type=int, default=1,
                           help="a KRaft cluster of this many nodes in --dir (3: replication 3, min.insync.replicas "
                                "2); run again to start the nodes that are down")
            p.add_argument("--secure", action="store_true",
                           help="clients on SASL_SSL only: TLS with a CA of its own and a SCRAM-SHA-512 user; "
                                "their settings are written to <dir>/client.properties")
        p.set_defaults(func=fn)

    topics = sub.add_parser("topics", help="declared topics")
    tsub = topics.add_subparsers(dest="topics_command", required=True)
    for name, fn, text in [
        ("create", cmd_topics_create, "create the declared topics (idempotent; refuses mismatches)"),
        ("describe", cmd_topics_describe, "live layout next to the declared one"),
        ("scale", cmd_topics_scale, "grow commands, events and timers online; returns when every moved "
                                    "workflow is in its new home"),
    ]:
        p = tsub.add_parser(name, help=text)
        _add_common(p)
        p.add_argument("--partitions", type=int, help="partition count (default: topics/topics.toml)")
        if name == "scale":
            p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the hand-offs (600)")
        if name == "create":
            p.add_argument("--dry-run", action="store_true", help="print what would be created; create nothing")
            p.add_argument("--replication-factor", type=int,
                           help="copies of each new topic (default: 3 on 3+ brokers, else 1; DP_REPLICATION_FACTOR)")
            p.add_argument("--min-insync-replicas", type=int,
                           help="min.insync.replicas of new topics (default: 2 with 3 copies, else 1)")
        p.set_defaults(func=fn)

    _register_engine_commands(sub, _add_common)
    return parser


def _register_engine_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Verbs that run or inspect workflows live in processor/_cli_engine.py (show, describe,
    history and the DLQ: _cli_operate.py; schedules: _cli_schedule.py; the visibility service and its reads:
    _cli_visibility.py)."""
    from processor import _cli_engine, _cli_operate, _cli_schedule, _cli_visibility

    _cli_engine.register(sub, add_common)
    _cli_operate.register(sub, add_common)
    _cli_schedule.register(sub, add_common)
    _cli_visibility.register(sub, add_common)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. Whatever it raises ends as one line on stderr and an exit code, never a
    traceback: ours say what to do; a vendor error or a bug of ours is named as such."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "no_create", False):
            os.environ["DP_NO_CREATE"] = "1"  # supervised children inherit it
        for flag, name in (("replication_factor", "DP_REPLICATION_FACTOR"), ("min_insync_replicas",
                                                                             "DP_MIN_INSYNC_REPLICAS")):
            if getattr(args, flag, None) is not None:
                os.environ[name] = str(getattr(args, flag))
        if getattr(args, "kafka_config", None):
            os.environ[kafka_config.ENV_FILE] = args.kafka_config  # supervised children inherit it
            kafka_config.reset()
        kafka_config.user_settings()  # a bad file or variable is one line now, not at the first client
        code: int = args.func(args)
    except ProcessorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        if isinstance(err, KafkaError) and err.code() == KafkaError._INVALID_ARG:  # noqa: SLF001 - librdkafka's name
            print(f"error: Kafka configuration: {err.str()} (check --kafka-config, DP_KAFKA_CONFIG and the "
                  "DP_KAFKA_* variables)", file=sys.stderr)
            return EXIT_ERROR
        print(f"error: Kafka: {err} (is the broker healthy? `{prog()} kafka status`)", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("DP_TRACEBACK"):
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc} -- a bug in durable-processor; "
              "run again with DP_TRACEBACK=1 for the traceback and report it", file=sys.stderr)
        return EXIT_BUG
    return code


if __name__ == "__main__":
    sys.exit(main())
