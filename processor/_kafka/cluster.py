"""A local KRaft cluster of several nodes (`processor kafka start --brokers 3`): each node is a
broker and a controller, the quorum is the nodes, internal and new topics get 3 copies with
min.insync.replicas 2 (one less than the nodes, at least 1). Built on local.py: each node is a
broker home of its own, `<dir>/node-<id>`, with its config, data, log and broker.json; the
cluster's id is in `<dir>/cluster.id` and its nodes in `<dir>/cluster.json`.

A node keeps its ports across restarts (the quorum's voters name them), so one node killed and
started again (`start_cluster` starts whichever nodes are down) rejoins as itself. Chaos tests
use `node_infos` to find which pid to SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from processor._kafka import local
from processor._kafka.local import BrokerInfo
from processor.exceptions import KafkaUnavailableError

MARKER = "cluster.json"


def is_cluster(home: Path) -> bool:
    return (home / MARKER).exists()


def node_home(home: Path, node_id: int) -> Path:
    return home / f"node-{node_id}"


def node_infos(home: Path) -> dict[int, BrokerInfo]:
    """Every node's recorded info (pid, ports), by node id."""
    nodes = json.loads((home / MARKER).read_text())["nodes"]
    out = {}
    for n in nodes:
        info = local.read_info(node_home(home, n))
        if info is not None:
            out[n] = info
    return out


def bootstrap(infos: dict[int, BrokerInfo]) -> str:
    return ",".join(infos[n].bootstrap for n in sorted(infos))


def start_cluster(home: Path, brokers: int = 3, heap: str = "384m", timeout: float = 180.0) -> tuple[str, list[int]]:
    """Start the nodes of the cluster in `home` that are not running (all of them the first
    time). Returns (bootstrap, the node ids started now)."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if (home / "broker.json").exists() and not is_cluster(home):
        raise KafkaUnavailableError(f"{home} holds a single broker: give --brokers {brokers} another --dir")
    if is_cluster(home):
        known = json.loads((home / MARKER).read_text())["nodes"]
        if len(known) != brokers:
            raise KafkaUnavailableError(f"{home} holds a cluster of {len(known)} nodes, not {brokers}: "
                                        "pass that --brokers, or another --dir")
    if brokers < 1:
        raise KafkaUnavailableError("--brokers must be 1 or more")
    ids = list(range(1, brokers + 1))
    previous = {n: local.read_info(node_home(home, n)) for n in ids}
    ports = {n: (p.port, p.controller_port) if p is not None else (local.free_port(), local.free_port())
             for n, p in previous.items()}
    voters = ",".join(f"{n}@127.0.0.1:{ports[n][1]}" for n in ids)
    cluster_file = home / "cluster.id"
    cluster_id = cluster_file.read_text().strip() if cluster_file.exists() else ""
    if not cluster_id:
        cluster_id = local.new_cluster_id()
        cluster_file.write_text(cluster_id)
    (home / MARKER).write_text(json.dumps({"nodes": ids}))
    java = local.require("java", "a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    libs = local.ensure_jars()
    started: list[tuple[BrokerInfo, subprocess.Popen[bytes]]] = []
    for n in ids:
        nhome = node_home(home, n)
        if local.running(nhome) is not None:
            continue
        prev = previous[n]
        if prev is not None and local.is_broker_of(prev.pid, nhome):
            raise KafkaUnavailableError(f"node {n} (pid {prev.pid}) runs but does not answer on port {prev.port} "
                                        f"yet; wait for it, or `processor kafka stop --dir {home}` and start again")
        nhome.mkdir(exist_ok=True)
        port, controller_port = ports[n]
        if not local.bindable(port) or not local.bindable(controller_port):
            raise KafkaUnavailableError(f"node {n}'s ports {port}/{controller_port} are in use on 127.0.0.1 "
                                        f"(recorded in {nhome}/broker.json): free them and start again")
        (nhome / "cluster.id").write_text(cluster_id)
        (nhome / "server.properties").write_text(local.server_properties(
            nhome, port, controller_port, node_id=n, voters=voters, replicas=replication_of(brokers)[0]))
        proc = local.launch(nhome, java, libs, cluster_id, heap)
        info = BrokerInfo(proc.pid, port, controller_port, cluster_id, str(nhome))
        (nhome / "broker.json").write_text(json.dumps(asdict(info)))
        started.append((info, proc))
    for info, proc in started:  # the quorum forms once enough nodes run: wait after starting them all
        local.wait_ready(info, proc, timeout)
    _wait_all_registered(node_infos(home), timeout)
    return bootstrap(node_infos(home)), [int(Path(i.home).name.split("-")[1]) for i, _ in started]


def _wait_all_registered(infos: dict[int, BrokerInfo], timeout: float) -> None:
    """Until the metadata lists every node as a broker (a restarted node serves leaders again)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap(infos), "logger": local.quiet_logger(),
                         "log_level": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if set(admin.list_topics(timeout=5).brokers) >= set(infos):
                return
        except Exception:  # noqa: BLE001, S110 - not ready yet
            pass
        time.sleep(0.3)
    raise KafkaUnavailableError(f"the cluster's nodes did not all register within {timeout:.0f}s; "
                                f"see {Path(next(iter(infos.values())).home).parent}/node-*/broker.log")


def running_nodes(home: Path) -> dict[int, BrokerInfo]:
    return {n: i for n, i in node_infos(home).items() if local.running(Path(i.home)) is not None}


def replication_of(brokers: int) -> tuple[int, int]:
    """(copies, min.insync.replicas) of the internal and new topics on a cluster of `brokers`."""
    replicas = min(3, brokers)
    return replicas, max(1, replicas - 1)


def stop_cluster(home: Path, timeout: float = 60.0) -> list[int]:
    """Stop every node at once (SIGTERM; SIGKILL after `timeout`); returns those that ran. All at
    once: a node stopped last would wait for a controller quorum that is gone."""
    alive = {n: i for n, i in node_infos(home).items() if local.is_broker_of(i.pid, Path(i.home))}
    for info in alive.values():
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(local.pid_alive(i.pid) for i in alive.values()):
        time.sleep(0.2)
    for info in alive.values():
        if local.pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
    return sorted(alive)
