"""The local broker's secured listener (`processor kafka start --secure`): TLS with a certificate
authority of its own and SASL/SCRAM-SHA-512, so a secured deployment can be tried and tested
on one machine.

Made in the broker home, once, with the JDK's keytool: `ca.p12` (the authority), `ca.pem` (its
certificate, for clients' ssl.ca.location), `broker.p12` (the broker's key and a certificate for
localhost / 127.0.0.1 signed by the authority) and `client.properties`: what a client needs
(`processor ... --kafka-config <home>/client.properties`). Clients reach the broker on
SASL_SSL only; the broker also listens on 127.0.0.1 in PLAINTEXT on an internal port, for
itself (inter-broker) and to create the SCRAM user after it starts -- a local broker's
shortcut that a real cluster must not copy.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from processor.exceptions import KafkaUnavailableError

USER = "dp"
MECHANISM = "SCRAM-SHA-512"


def _keytool(keytool: str, *args: str) -> None:
    done = subprocess.run([keytool, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KafkaUnavailableError(f"keytool {args[0]} failed: {(done.stderr or done.stdout).strip()}")


def _secret(home: Path) -> str:
    path = home / "secure.secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_credentials(home: Path, keytool: str) -> str:
    """The stores, certificates and client.properties in `home` (made once); returns the password
    of the stores and of the SCRAM user (one random secret, kept in secure.secret, mode 600)."""
    password = _secret(home)
    if (home / "broker.p12").exists() and (home / "ca.pem").exists():
        write_client_properties(home, password)
        return password
    for name in ("ca.p12", "broker.p12", "broker.csr", "broker.crt"):
        (home / name).unlink(missing_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", password, "-keypass", password]
    ca, broker = str(home / "ca.p12"), str(home / "broker.p12")
    _keytool(keytool, "-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
             "-dname", "CN=durable-processor local CA", "-ext", "bc:c", "-keystore", ca, *store)
    _keytool(keytool, "-exportcert", "-rfc", "-alias", "ca", "-keystore", ca, "-storepass", password,
             "-file", str(home / "ca.pem"))
    _keytool(keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
             "-dname", "CN=localhost", "-keystore", broker, *store)
    _keytool(keytool, "-certreq", "-alias", "broker", "-keystore", broker, "-storepass", password,
             "-file", str(home / "broker.csr"))
    _keytool(keytool, "-gencert", "-alias", "ca", "-keystore", ca, "-storepass", password, "-rfc",
             "-infile", str(home / "broker.csr"), "-outfile", str(home / "broker.crt"), "-validity", "3650",
             "-ext", "SAN=dns:localhost,ip:127.0.0.1")
    _keytool(keytool, "-importcert", "-noprompt", "-alias", "ca", "-file", str(home / "ca.pem"),
             "-keystore", broker, "-storepass", password)
    _keytool(keytool, "-importcert", "-alias", "broker", "-file", str(home / "broker.crt"),
             "-keystore", broker, "-storepass", password)
    write_client_properties(home, password)
    return password


def client_settings(home: Path, password: str) -> dict[str, str]:
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM, "sasl.username": USER,
            "sasl.password": password, "ssl.ca.location": str(home / "ca.pem")}


def write_client_properties(home: Path, password: str) -> Path:
    path = home / "client.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in client_settings(home, password).items()))
    path.chmod(0o600)
    return path


def listener_properties(home: Path, port: int, internal_port: int, controller_port: int,
                        password: str) -> list[str]:
    """The broker settings of the secured listeners (they replace the PLAINTEXT ones)."""
    return [
        f"listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port},"
        f"CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=INTERNAL",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
        f"sasl.enabled.mechanisms={MECHANISM}",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"ssl.keystore.location={home / 'broker.p12'}",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.password={password}",
        f"ssl.key.password={password}",
    ]


def create_user(internal_bootstrap: str, password: str, timeout: float = 30.0) -> None:
    """Upsert the SCRAM user through the internal listener (idempotent: every start does it)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    # The local broker's own listener, not the user's cluster: no user settings apply.
    admin = AdminClient({"bootstrap.servers": internal_bootstrap, "log_level": 0})
    upsert = UserScramCredentialUpsertion(USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                          password.encode())
    for fut in admin.alter_user_scram_credentials([upsert]).values():
        try:
            fut.result(timeout)
        except Exception as exc:  # noqa: BLE001 - Kafka's reason, in one line
            raise KafkaUnavailableError(f"creating the SCRAM user {USER!r} on the local broker failed: {exc}") from None
