"""One Kafka configuration for every client this project builds: the processor's producer and
consumers, the restore and probe consumers, workers, the Python client, the CLI and the admin
client. Every `Producer(...)`, `Consumer(...)` and `AdminClient(...)` in the package takes its
settings from `client_config` (tests/unit/test_kafka_config.py checks that none bypasses it).

The user's settings, lowest precedence first:
  1. a file named by `DP_KAFKA_CONFIG` (`--kafka-config FILE` sets it, so supervised children
     inherit it): Java-style `.properties` (`key=value`, every client), or TOML with top-level
     keys for every client and tables `[producer]`, `[consumer]`, `[admin]` for one role;
  2. environment variables: `DP_KAFKA_<SETTING>` for every client, `DP_KAFKA_PRODUCER_<SETTING>`
     (and `_CONSUMER_`, `_ADMIN_`) for one role; the setting's dots as underscores, any case
     (`DP_KAFKA_SECURITY_PROTOCOL=SASL_SSL` is `security.protocol`);
  3. `configure({...}, producer={...}, ...)` in Python, for what a file cannot hold (an
     `oauth_cb` callable).

How one client's configuration is made: our tunable defaults, then the user's settings for every
client, then the user's for the client's role, then what correctness needs (`fixed`: a user value
that differs from it is refused with the reason). `bootstrap.servers` comes from --bootstrap /
KAFKA_BOOTSTRAP only. librdkafka logs through Python logging (`processor.kafka.<what the client
is>`). `client.id` is unique per client: `<the user's client.id, else dp>-<what
the client is>-<host>-<pid>`, so quotas and per-client broker metrics can tell processes apart.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.exceptions import ConfigError

ENV_FILE = "DP_KAFKA_CONFIG"
ENV_PREFIX = "DP_KAFKA_"
ROLES = ("producer", "consumer", "admin")
_NOT_SETTINGS = {ENV_FILE}  # DP_KAFKA_* variables that are not librdkafka settings
_SECRET_WORDS = ("password", "secret", "token", "jaas", "private", "key.pem", "credentials")


@dataclass
class UserSettings:
    """The user's librdkafka settings: for every client, and per role."""

    common: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=lambda: {r: {} for r in ROLES})

    def update(self, other: UserSettings) -> None:
        self.common.update(other.common)
        for role in ROLES:
            self.roles[role].update(other.roles[role])


def _check_key(key: str, where: str) -> str:
    key = key.strip()
    if not key or any(c.isspace() for c in key):
        raise ConfigError(f"{where}: {key!r} is not a Kafka setting name")
    if key == "bootstrap.servers":
        raise ConfigError(f"{where}: set bootstrap.servers with --bootstrap or KAFKA_BOOTSTRAP, not here")
    return key


def _value(raw: Any) -> Any:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return raw if callable(raw) or isinstance(raw, logging.Logger) else str(raw)


def load_file(path: str | Path) -> UserSettings:
    """Settings from a .properties file or (by its .toml suffix) a TOML file; ConfigError saying
    what is wrong if it cannot be read."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the Kafka configuration {p}: {exc.strerror}") from None
    out = UserSettings()
    if p.suffix == ".toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p} is not valid TOML: {exc}") from None
        for key, value in doc.items():
            if key in ROLES and isinstance(value, dict):
                out.roles[key].update({_check_key(k, str(p)): _value(v) for k, v in _flatten(value).items()})
            else:  # a setting; unquoted dotted names (ssl.ca.location = ...) read as tables are joined back
                flat = _flatten(value, key + ".") if isinstance(value, dict) else {key: value}
                out.common.update({_check_key(k, str(p)): _value(v) for k, v in flat.items()})
        return out
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        sep = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if sep < 0:
            raise ConfigError(f"{p} line {n}: expected key=value, got {line[:40]!r}")
        out.common[_check_key(line[:sep], f"{p} line {n}")] = line[sep + 1:].strip()
    return out


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML reads `ssl.ca.location = "x"` (unquoted) as nested tables: join them back with dots."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def from_env(env: Mapping[str, str]) -> UserSettings:
    out = UserSettings()
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        role = next((r for r in ROLES if rest.startswith(r + "_")), None)
        key = _check_key((rest[len(role) + 1:] if role else rest).replace("_", "."), name)
        (out.roles[role] if role else out.common)[key] = value
    return out


_lock = threading.Lock()
_configured = UserSettings()
_cache: UserSettings | None = None


def configure(settings: Mapping[str, Any] | None = None, *, producer: Mapping[str, Any] | None = None,
              consumer: Mapping[str, Any] | None = None, admin: Mapping[str, Any] | None = None) -> None:
    """Kafka settings for every client this process builds from now on (on top of the file and
    the environment); values may be callables where librdkafka takes one (`oauth_cb`)."""
    global _cache
    with _lock:
        for target, given in ((_configured.common, settings), (_configured.roles["producer"], producer),
                              (_configured.roles["consumer"], consumer), (_configured.roles["admin"], admin)):
            for key, value in (given or {}).items():
                target[_check_key(key, "configure()")] = _value(value)
        _cache = None


def reset() -> None:
    """Forget configure() and re-read the file and the environment on next use (tests)."""
    global _configured, _cache
    with _lock:
        _configured, _cache = UserSettings(), None


def user_settings() -> UserSettings:
    global _cache
    with _lock:
        if _cache is None:
            merged = UserSettings()
            path = os.environ.get(ENV_FILE)
            if path:
                merged.update(load_file(path))
            merged.update(from_env(os.environ))
            merged.update(_configured)
            _cache = merged
        return _cache


def client_config(role: str, bootstrap: str, name: str, ours: Mapping[str, Any] | None = None,
                  fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The configuration of one client: `role` is producer, consumer or admin; `name` says what
    the client is (it goes into client.id); `ours` are defaults the user may change, `fixed`
    settings the engine's correctness rests on."""
    user = user_settings()
    conf: dict[str, Any] = dict(ours or {})
    conf.update(user.common)
    conf.update(user.roles[role])
    for key, value in (fixed or {}).items():
        given = user.roles[role].get(key, user.common.get(key))
        if given is not None and str(given).lower() != str(value).lower():
            raise ConfigError(f"the Kafka setting {key}={given} cannot be used: the {name} client needs "
                              f"{key}={value}")
        conf[key] = value
    base = str(user.roles[role].get("client.id") or user.common.get("client.id") or "dp")
    conf["client.id"] = f"{base}-{name}-{socket.gethostname()}-{os.getpid()}"
    # librdkafka's own log lines go through Python logging (served by the client's poll), not
    # raw `%3|...` lines on stderr; a `logger` of the user's (configure()) takes precedence.
    # (Once taken out as the suspect of workers aborting inside librdkafka under load; the cause
    # was a coordinator-bound admin request timing out inside librdkafka: coverage.py.)
    conf.setdefault("logger", logging.getLogger(f"processor.kafka.{name}"))
    conf["bootstrap.servers"] = bootstrap
    return conf


def redacted(conf: Mapping[str, Any]) -> dict[str, Any]:
    """`conf` fit for a log line or an error message: secrets and callables hidden."""
    out: dict[str, Any] = {}
    for key, value in conf.items():
        if callable(value):
            out[key] = "<callable>"
        elif any(word in key.lower() for word in _SECRET_WORDS):
            out[key] = "***"
        else:
            out[key] = value
    return out
