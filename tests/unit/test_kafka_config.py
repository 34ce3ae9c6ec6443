"""One Kafka configuration for every client (processor/_kafka/config.py): where the user's
settings come from, their precedence, what the engine does not let them change, and that no
client in the package is built around it."""

from __future__ import annotations

import ast
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor._kafka import config
from processor._kafka.config import client_config, configure, from_env, load_file, redacted
from processor.exceptions import ConfigError

PACKAGE = Path(config.__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("DP_KAFKA_")]:
        monkeypatch.delenv(name)
    config.reset()
    yield
    config.reset()


def test_a_properties_file_applies_to_every_role(tmp_path: Path) -> None:
    f = tmp_path / "kafka.properties"
    f.write_text("# a comment\nsecurity.protocol=SASL_SSL\nsasl.mechanism: SCRAM-SHA-512\n\n! also a comment\n")
    got = load_file(f)
    assert got.common == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}
    assert got.roles == {"producer": {}, "consumer": {}, "admin": {}}


def test_a_toml_file_has_settings_for_every_client_and_tables_per_role(tmp_path: Path) -> None:
    f = tmp_path / "kafka.toml"
    f.write_text('"security.protocol" = "SSL"\nssl.ca.location = "/etc/ca.pem"\n'
                 '[producer]\n"linger.ms" = 5\ncompression.type = "zstd"\n'
                 '[consumer]\n"fetch.wait.max.ms" = 50\n"check.crcs" = true\n')
    got = load_file(f)
    assert got.common == {"security.protocol": "SSL", "ssl.ca.location": "/etc/ca.pem"}
    assert got.roles["producer"] == {"linger.ms": "5", "compression.type": "zstd"}
    assert got.roles["consumer"] == {"fetch.wait.max.ms": "50", "check.crcs": "true"}


@pytest.mark.parametrize(("text", "suffix", "message"), [
    ("bootstrap.servers=x:9092\n", ".properties", "set bootstrap.servers with --bootstrap"),
    ("no separator here\n", ".properties", "line 1: expected key=value"),
    ("[consumer]\nbootstrap.servers = 'x:1'\n", ".toml", "set bootstrap.servers with --bootstrap"),
    ("= broken", ".toml", "is not valid TOML"),
])
def test_a_bad_file_is_one_clear_error(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    f = tmp_path / f"kafka{suffix}"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_file(f)


def test_environment_variables_name_settings_and_roles() -> None:
    got = from_env({"DP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DP_KAFKA_PRODUCER_LINGER_MS": "7",
                    "DP_KAFKA_CONSUMER_FETCH_WAIT_MAX_MS": "25", "DP_KAFKA_ADMIN_SOCKET_TIMEOUT_MS": "9000",
                    "DP_KAFKA_CONFIG": "/not/a/setting", "KAFKA_BOOTSTRAP": "x:1"})
    assert got.common == {"security.protocol": "SASL_SSL"}
    assert got.roles == {"producer": {"linger.ms": "7"}, "consumer": {"fetch.wait.max.ms": "25"},
                         "admin": {"socket.timeout.ms": "9000"}}


def test_precedence_ours_then_file_then_environment_then_python(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "kafka.toml"
    f.write_text('"linger.ms" = 3\n"acks" = "all"\n"compression.type" = "lz4"\n[producer]\n"batch.size" = 1000\n')
    monkeypatch.setenv("DP_KAFKA_CONFIG", str(f))
    monkeypatch.setenv("DP_KAFKA_PRODUCER_COMPRESSION_TYPE", "zstd")
    configure(producer={"batch.size": 2000})
    conf = client_config("producer", "b:9092", "client", {"linger.ms": 1, "retries": 5})
    assert conf["linger.ms"] == "3", "the file beats our default"
    assert conf["retries"] == 5, "our default where the user says nothing"
    assert conf["compression.type"] == "zstd", "the environment beats the file"
    assert conf["batch.size"] == "2000", "configure() beats both"
    assert conf["bootstrap.servers"] == "b:9092"
    consumer = client_config("consumer", "b:9092", "client-history")
    assert "batch.size" not in consumer and consumer["acks"] == "all", "role tables stay in their role"


def test_what_correctness_needs_cannot_be_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DP_KAFKA_CONSUMER_ISOLATION_LEVEL", "read_uncommitted")
    with pytest.raises(ConfigError, match="isolation.level=read_uncommitted cannot be used: the restore client "
                                          "needs isolation.level=read_committed"):
        client_config("consumer", "b:1", "restore", fixed={"isolation.level": "read_committed"})
    monkeypatch.setenv("DP_KAFKA_CONSUMER_ISOLATION_LEVEL", "READ_COMMITTED")  # the same value is fine
    config.reset()
    assert client_config("consumer", "b:1", "restore",
                         fixed={"isolation.level": "read_committed"})["isolation.level"] == "read_committed"
    configure({"enable.idempotence": "true"})
    assert client_config("producer", "b:1", "client", fixed={"enable.idempotence": True})["enable.idempotence"]


def test_every_client_has_a_client_id_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    me = f"{socket.gethostname()}-{os.getpid()}"
    assert client_config("producer", "b:1", "processor")["client.id"] == f"dp-processor-{me}"
    monkeypatch.setenv("DP_KAFKA_CLIENT_ID", "orders")
    config.reset()
    assert client_config("consumer", "b:1", "worker-default")["client.id"] == f"orders-worker-default-{me}"


def test_callables_pass_through_configure() -> None:
    def token(_config: str) -> tuple[str, float]:
        return "t", 0.0

    configure({"sasl.mechanism": "OAUTHBEARER", "oauth_cb": token})
    assert client_config("admin", "b:1", "admin")["oauth_cb"] is token


def test_secrets_never_reach_a_log_line() -> None:
    shown = redacted({"sasl.password": "hunter2", "ssl.key.password": "k", "sasl.oauthbearer.client.secret": "s",
                      "sasl.jaas.config": "x", "oauth_cb": print, "linger.ms": "5", "sasl.username": "alice"})
    assert "hunter2" not in str(shown) and shown["linger.ms"] == "5" and shown["sasl.username"] == "alice"
    assert shown["oauth_cb"] == "<callable>" and shown["sasl.oauthbearer.client.secret"] == "***"


# The builders' configuration arguments that come from client_config by another route.
_DERIVED = {"conf", "self._consumer_config", "self._producer_config", "settings.group_consumer_config",
            "self.settings.group_consumer_config"}
# Clients that do not talk to the user's cluster: `processor kafka start`'s own local broker.
_ALLOWED = {("_kafka/local.py", "AdminClient"), ("_kafka/secure.py", "AdminClient"),
            ("_kafka/cluster.py", "AdminClient")}


def test_no_kafka_client_in_the_package_is_built_around_client_config() -> None:
    bypasses = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in {"Consumer", "Producer", "AdminClient"}):
                continue
            arg = node.args[0] if node.args else None
            source = ast.unparse(arg.func if isinstance(arg, ast.Call) else arg) if arg is not None else ""
            if source == "client_config" or source in _DERIVED or (rel, node.func.id) in _ALLOWED:
                continue
            bypasses.append(f"{rel}:{node.lineno} {node.func.id}({source})")
    assert bypasses == []


def test_librdkafka_logs_through_python_logging_not_raw_stderr(caplog: pytest.LogCaptureFixture,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    """A client whose broker refuses connections: librdkafka's complaint arrives as a Python log
    record of `processor.kafka.<client>`, and no raw `%3|...` line reaches stderr."""
    import time

    from confluent_kafka import Producer

    conf = client_config("producer", "127.0.0.1:1", "log-test", {"reconnect.backoff.ms": 50})
    assert conf["logger"].name == "processor.kafka.log-test"
    producer = Producer(conf)
    caplog.set_level("DEBUG", logger="processor.kafka")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(r.name == "processor.kafka.log-test" for r in caplog.records):
        producer.poll(0.1)
    assert any(r.name == "processor.kafka.log-test" and "127.0.0.1:1" in r.getMessage() for r in caplog.records)
    assert "%3|" not in capfd.readouterr().err


def test_a_users_logger_is_kept() -> None:
    import logging

    mine = logging.getLogger("mine")
    configure({"logger": mine})
    assert client_config("consumer", "b:1", "x")["logger"] is mine
