"""A real single-node Apache Kafka broker (KRaft) run from Maven Central jars, no Docker needed.

The broker's jars are fetched once by Maven from the pom kept beside this file and cached outside
the repo; each broker "home" directory holds its config, data and log, so data survives
stop/start. The broker runs detached in its own session; `broker.json` in the home records its
pid and ports so a later `status` or `stop` (from another process) finds it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from processor._kafka.secure import create_user, ensure_credentials, listener_properties
from processor.exceptions import KafkaUnavailableError

KAFKA_VERSION = "4.1.1"
_POM = Path(__file__).resolve().parent / "pom.xml"
_READY_LINE = "Kafka Server started"


def default_home() -> Path:
    return Path(os.environ.get("DP_KAFKA_HOME", Path.home() / ".durable-processor" / "kafka"))


def jar_cache() -> Path:
    base = os.environ.get("DP_CACHE_DIR", str(Path.home() / ".cache" / "durable-processor"))
    return Path(base) / f"kafka-{KAFKA_VERSION}" / "libs"


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    controller_port: int
    cluster_id: str
    home: str
    secure: bool = False  # clients on SASL_SSL (secure.py); then internal_port is the broker's own
    internal_port: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def require(tool: str, package_hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaUnavailableError(
            f"`{tool}` is not on PATH: install {package_hint} to run the local Kafka broker "
            "(or point KAFKA_BOOTSTRAP at a broker you run yourself)."
        )
    return path


def ensure_jars(log: bool = True) -> Path:
    """Fetch the broker's runtime jars into the cache once; later calls return at once."""
    libs = jar_cache()
    marker = libs / ".complete"
    if marker.exists():
        return libs
    require("java", "a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    mvn = require("mvn", "Apache Maven (e.g. `apt-get install maven`)")
    libs.mkdir(parents=True, exist_ok=True)
    if log:
        print(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} ...", flush=True)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(_POM), "dependency:copy-dependencies", f"-DoutputDirectory={libs}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise KafkaUnavailableError(
            f"Maven could not fetch the Kafka jars (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    marker.write_text(KAFKA_VERSION)
    return libs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists": reap it so it reads as dead.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def server_properties(home: Path, port: int, controller_port: int, listeners: list[str] | None = None, *,
                      node_id: int = 1, voters: str | None = None, replicas: int = 1) -> str:
    """KRaft settings of a single node (the reasons are in ../shared/KAFKA.md), or of one node of
    a cluster (cluster.py): `voters` the quorum, `replicas` the internal topics' replication (their
    min.isr one less). `listeners` replace the PLAINTEXT ones (secure.py)."""
    data = home / "data"
    isr = max(1, replicas - 1)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters or f'1@127.0.0.1:{controller_port}'}",
            *(listeners or [
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]),
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            # Internal topics: one copy on one node (more and transactions hang), 3 on a cluster.
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=1",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={isr}",
            "transaction.state.log.num.partitions=1",
            *([f"default.replication.factor={replicas}", f"min.insync.replicas={isr}",
               # A SIGKILLed node is fenced (its partitions led elsewhere) after this, not 9 s.
               "broker.session.timeout.ms=4000", "broker.heartbeat.interval.ms=500"] if replicas > 1 else []),
            "group.initial.rebalance.delay.ms=0",
            # Let clients ask for short sessions so a killed processor's partitions move quickly.
            "group.min.session.timeout.ms=1000",
            "group.consumer.min.session.timeout.ms=1000",
            "group.consumer.session.timeout.ms=6000",
            "group.consumer.min.heartbeat.interval.ms=250",
            "group.consumer.heartbeat.interval.ms=1000",
            # Compaction that tests (and a laptop) can watch happen.
            "log.cleaner.backoff.ms=200",
            "log.cleaner.dedupe.buffer.size=33554432",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=2000",
            "transaction.remove.expired.transaction.cleanup.interval.ms=60000",
            "",
        ]
    )


def _log4j2_config(home: Path) -> Path:
    path = home / "log4j2.properties"
    path.write_text(
        "\n".join(
            [
                "rootLogger.level=INFO",
                "rootLogger.appenderRef.file.ref=file",
                "appender.file.type=File",
                "appender.file.name=file",
                f"appender.file.fileName={home / 'broker.log'}",
                "appender.file.layout.type=PatternLayout",
                "appender.file.layout.pattern=[%d] %p %m (%c)%n",
                "logger.kafka.name=kafka",
                "logger.kafka.level=INFO",
                "logger.cleaner.name=kafka.log.LogCleaner",
                "logger.cleaner.level=INFO",
                "logger.state.name=state.change.logger",
                "logger.state.level=WARN",
                "",
            ]
        )
    )
    return path


def read_info(home: Path) -> BrokerInfo | None:
    path = home / "broker.json"
    if not path.exists():
        return None
    return BrokerInfo(**json.loads(path.read_text()))


def running(home: Path) -> BrokerInfo | None:
    info = read_info(home)
    if info is not None and pid_alive(info.pid) and _port_open(info.port):
        return info
    return None


def start(
    home: Path | None = None,
    port: int | None = None,
    controller_port: int | None = None,
    heap: str = "512m",
    timeout: float = 120.0,
    log: bool = True,
    secure: bool = False,
) -> tuple[BrokerInfo, bool]:
    """Start the broker in `home` unless it already runs. Returns (info, started_now). `secure`:
    clients reach it on SASL_SSL only, with the credentials in <home>/client.properties (secure.py)."""
    home = (home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    current = running(home)
    if current is not None:
        return current, False
    previous = read_info(home)
    if previous is not None and is_broker_of(previous.pid, home):
        raise KafkaUnavailableError(
            f"the broker of {home} (pid {previous.pid}) is running but does not answer on port {previous.port}; "
            f"wait for it, or stop it with `processor kafka stop{_dir_flag(home)}` and start again"
        )
    # Reuse the previous ports so clients keep their bootstrap address across restarts.
    if port == 0:  # explicitly "any free port"
        port = free_port()
    asked = port is not None
    port = port or (previous.port if previous else None) or _preferred_port(9092)
    if previous is not None and not controller_port and not _port_free(previous.controller_port):
        controller_port = free_port()  # only the client port is part of what users configure
    controller_port = controller_port or (previous.controller_port if previous else None) or free_port()
    # A broker that cannot bind its port exits at once, while whatever holds that port may answer
    # the readiness probe: check up front, and check who answers below (wait_ready).
    if not _port_free(port):
        how = "" if asked else f" (the port this broker home used before; {home}/broker.json)"
        raise KafkaUnavailableError(
            f"port {port}{how} is already in use on 127.0.0.1, so the broker cannot listen there: stop "
            "what uses it, or pick another with `processor kafka start --port N` (--port 0: any free port)"
        )
    if not _port_free(controller_port):
        raise KafkaUnavailableError(f"the controller port {controller_port} is already in use on 127.0.0.1; "
                                    "free it and start again")
    java = require("java", "a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    libs = ensure_jars(log=log)
    cluster_file = home / "cluster.id"
    cluster_id = cluster_file.read_text().strip() if cluster_file.exists() else ""
    if not cluster_id or cluster_id.startswith("-"):  # one that starts with "-" never formatted anything
        cluster_id = new_cluster_id()
        cluster_file.write_text(cluster_id)
    listeners, internal_port, password = None, 0, ""
    if secure:
        password = ensure_credentials(home, require("keytool", "a Java 17+ JDK (keytool)"))
        internal_port = previous.internal_port if previous and previous.internal_port and \
            _port_free(previous.internal_port) else free_port()
        listeners = listener_properties(home, port, internal_port, controller_port, password)
    config = home / "server.properties"
    config.write_text(server_properties(home, port, controller_port, listeners))
    proc = launch(home, java, libs, cluster_id, heap)
    info = BrokerInfo(proc.pid, port, controller_port, cluster_id, str(home), secure, internal_port)
    (home / "broker.json").write_text(json.dumps(asdict(info)))
    wait_ready(info, proc, timeout)
    if secure:
        create_user(f"127.0.0.1:{internal_port}", password)
    return info, True


def launch(home: Path, java: str, libs: Path, cluster_id: str, heap: str) -> subprocess.Popen[bytes]:
    """Format `home`'s storage (once) and start its node on `home/server.properties`, detached."""
    config = home / "server.properties"
    classpath = f"{libs}/*"
    jvm = [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
    jvm += [f"-Dlog4j2.configurationFile={_log4j2_config(home)}", "-cp", classpath]
    fmt = subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "--cluster-id", cluster_id, "--config", str(config),
         "--ignore-formatted"],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise KafkaUnavailableError(f"formatting the broker storage failed:\n{fmt.stdout}{fmt.stderr}")
    out = open(home / "broker.out", "ab")  # noqa: SIM115 - handed to the detached child
    proc = subprocess.Popen(
        [*jvm, "kafka.Kafka", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=home,
    )
    out.close()
    return proc


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64, as Kafka's own ids -- and, as Kafka's Uuid does, never
    starting with "-": `kafka-storage format --cluster-id -x...` reads it as an option and fails
    (seen in CI: 1 fresh broker home in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _preferred_port(port: int) -> int:
    return port if _port_free(port) else free_port()


def _port_free(port: int) -> bool:
    return not _port_open(port) and bindable(port)


def is_broker_of(pid: int, home: Path) -> bool:
    """Whether `pid` is alive and is a Kafka broker run from `home` (not a recycled pid)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False  # no /proc (or gone): cannot tell, so do not block a start on it
    return b"kafka.Kafka" in cmdline and str(home).encode() in cmdline


def _dir_flag(home: Path) -> str:
    return "" if home == default_home().resolve() else f" --dir {home}"


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the broker binds: SO_REUSEADDR, so connections of a broker just stopped (TIME_WAIT)
        # do not make its own port look taken on a restart.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_ready(info: BrokerInfo, proc: subprocess.Popen[bytes], timeout: float) -> None:
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KafkaUnavailableError(f"the Kafka broker exited with {proc.returncode} while starting: "
                                        f"{_startup_error(Path(info.home))}; see {info.home}/broker.log")
        if _port_open(info.port):
            # A secured broker is asked on its internal listener: no user exists before it is up.
            probe = f"127.0.0.1:{info.internal_port}" if info.secure else info.bootstrap
            admin = AdminClient({"bootstrap.servers": probe, "logger": quiet_logger(), "log_level": 0})
            try:
                md = admin.list_topics(timeout=2)
            except Exception:  # noqa: BLE001 - not ready yet; any client error means "retry"
                md = None
            if md is not None and md.brokers:
                # Whoever answers must be the broker just started: same cluster id, still alive.
                if md.cluster_id != info.cluster_id:
                    _end(proc)
                    raise KafkaUnavailableError(
                        f"port {info.port} is answered by another Kafka (cluster {md.cluster_id}), not by the "
                        f"broker started in {info.home}; pick a free port with --port N (--port 0: any)"
                    )
                if proc.poll() is None:
                    return
        time.sleep(0.2)
    _end(proc)
    raise KafkaUnavailableError(f"the Kafka broker did not answer within {timeout:.0f}s; see {info.home}/broker.log")


def _startup_error(home: Path) -> str:
    """The first exception message the broker logged (broker.log, else broker.out), in one line."""
    for name in ("broker.log", "broker.out"):
        try:
            lines = (home / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            head, sep, message = line.partition("Exception: ")
            if sep and not head.startswith(("\t", " ")):
                return message.strip()
        errors = [line for line in lines if " ERROR " in line]
        if errors:
            return errors[0].strip()
    return "it logged no error"


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop a broker that failed to start, so no half-started broker stays behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def quiet_logger() -> Any:
    import logging

    logger = logging.getLogger("processor.kafka.local")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def stop(home: Path | None = None, timeout: float = 60.0) -> BrokerInfo | None:
    """Controlled shutdown (SIGTERM); SIGKILL only if it does not exit in time."""
    home = (home or default_home()).resolve()
    info = read_info(home)
    if info is None or not pid_alive(info.pid):
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(info.pid):
            return info
        time.sleep(0.2)
    os.kill(info.pid, signal.SIGKILL)
    print(f"broker {info.pid} did not stop within {timeout:.0f}s; killed", file=sys.stderr)
    return info
