"""Payload codecs (processor/payloads.py): compression and AES-GCM encryption with key ids,
configured in Python or from the environment, applied by to_payload and undone by from_payload;
the bytes are those docs/protocol.md#payload-codecs describes; a reader without the key gets an
error that says what to set; pydantic models convert like dataclasses."""

from __future__ import annotations

import base64
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from processor import payloads
from processor._payload import from_payload, to_payload
from processor._visibility.record import jsonable_payload
from processor.exceptions import ConfigError, PayloadError
from processor.payloads import AesGcm, Zlib

K1, K2 = bytes(range(32)), bytes(range(100, 132))
SECRET = {"card": "4111-1111-1111-1111", "holder": "Ada Lovelace"}


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("DP_PAYLOAD_")]:
        monkeypatch.delenv(name)
    payloads.reset()
    yield
    payloads.reset()


def _sim_class() -> Any:
    """The runtime tests' Sim (tests/unit/runtime/wf_harness.py): plays the processor for one instance."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "runtime"))
    from wf_harness import Sim

    return Sim


def test_no_codec_leaves_the_plain_payload() -> None:
    assert to_payload(SECRET) == {"encoding": "json/plain", "data": json.dumps(SECRET, separators=(",", ":")).encode()}


def test_encrypted_payloads_hold_no_plaintext_and_decode_back() -> None:
    payloads.configure([AesGcm({"k1": K1})])
    p = to_payload(SECRET)
    assert p["encoding"] == "binary/encrypted"
    assert b"4111" not in p["data"] and b"Ada" not in p["data"] and b"json/plain" not in p["data"]
    assert p["data"][:4] == b"\x01\x02k1"  # version, key id length, key id
    assert to_payload(SECRET)["data"] != p["data"]  # a fresh nonce each time
    assert from_payload(p) == SECRET
    assert from_payload(to_payload(None)) is None and from_payload(to_payload(b"\x00raw")) == b"\x00raw"


def test_compression_applies_to_large_payloads_only_and_layers_stack() -> None:
    payloads.configure([Zlib(min_size=100)])
    small, large = to_payload("short"), to_payload(["same words again"] * 200)
    assert small["encoding"] == "json/plain"
    assert large["encoding"] == "binary/zlib" and len(large["data"]) < 200
    assert from_payload(large) == ["same words again"] * 200
    payloads.configure([Zlib(min_size=100), AesGcm({"k1": K1})])
    both = to_payload(["same words again"] * 200)
    assert both["encoding"] == "binary/encrypted" and len(both["data"]) < 250  # compressed, then sealed
    assert from_payload(both) == ["same words again"] * 200


def test_keys_rotate_old_payloads_still_read() -> None:
    payloads.configure([AesGcm({"k1": K1})])
    old = to_payload(SECRET)
    payloads.configure([AesGcm({"k2": K2, "k1": K1})])  # the new key first: it encrypts
    new = to_payload(SECRET)
    assert new["data"][2:4] == b"k2"
    assert from_payload(old) == SECRET and from_payload(new) == SECRET


def test_a_reader_without_the_key_is_told_what_to_set() -> None:
    payloads.configure([AesGcm({"k1": K1})])
    p = to_payload(SECRET)
    payloads.configure([AesGcm({"k2": K2})])
    with pytest.raises(PayloadError, match="encrypted with key id 'k1', which this process does not have .it has k2."):
        from_payload(p)
    payloads.configure([AesGcm({"k1": K2})])
    with pytest.raises(PayloadError, match="does not decrypt with this process's key 'k1' .authentication failed."):
        from_payload(p)
    payloads.configure(None)
    with pytest.raises(PayloadError, match="key id 'k1' and this process has no payload keys: set DP_PAYLOAD_KEYS"):
        from_payload(p)
    altered = {"encoding": p["encoding"], "data": p["data"][:-1] + bytes([p["data"][-1] ^ 1])}
    payloads.configure([AesGcm({"k1": K1})])
    with pytest.raises(PayloadError, match="or the payload was altered"):
        from_payload(altered)


def test_the_documented_bytes_are_what_is_read() -> None:
    """Built by hand from docs/protocol.md#payload-codecs, as a Java or Go writer would."""
    inner = b"\x0ajson/plain" + b'{"n":1}'
    packed = b"\x0ajson/plain" + zlib.compress(inner[11:])
    zlibbed = {"encoding": "binary/zlib", "data": packed}
    assert from_payload(zlibbed) == {"n": 1}
    head = b"\x01\x05key-a"
    nonce = bytes(12)
    sealed = AESGCM(K1).encrypt(nonce, b"\x0bbinary/zlib" + packed, head)
    payloads.configure([AesGcm({"key-a": K1})])
    assert from_payload({"encoding": "binary/encrypted", "data": head + nonce + sealed}) == {"n": 1}


def test_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    b64 = base64.b64encode
    monkeypatch.setenv("DP_PAYLOAD_CODECS", "zlib, AES-GCM")
    monkeypatch.setenv("DP_PAYLOAD_KEYS", f"k2:{b64(K2).decode()}")
    keys = tmp_path / "keys"
    keys.write_text(f"# rotated out 2026-11\nk1:{b64(K1).decode()}\n")
    monkeypatch.setenv("DP_PAYLOAD_KEYS_FILE", str(keys))
    monkeypatch.setenv("DP_PAYLOAD_COMPRESS_MIN", "10")
    chain = payloads.chain()
    assert chain is not None and [type(c).__name__ for c in chain.codecs] == ["Zlib", "AesGcm"]
    aes = chain.codecs[1]
    assert isinstance(aes, AesGcm) and aes.current == "k2" and aes.key_ids == ["k2", "k1"]
    p = to_payload("x" * 50)
    assert p["data"][2:4] == b"k2" and from_payload(p) == "x" * 50


@pytest.mark.parametrize(("env", "message"), [
    ({"DP_PAYLOAD_CODECS": "rot13"}, "DP_PAYLOAD_CODECS names 'rot13': the codecs are zlib and aes-gcm"),
    ({"DP_PAYLOAD_CODECS": "aes-gcm"}, "aes-gcm needs keys: set DP_PAYLOAD_KEYS"),
    ({"DP_PAYLOAD_KEYS": "k1"}, "DP_PAYLOAD_KEYS: expected key-id:base64-key"),
    ({"DP_PAYLOAD_KEYS": "k1:not base64!"}, "the key of id 'k1' is not base64"),
    ({"DP_PAYLOAD_KEYS": "k1:" + base64.b64encode(b"short").decode()}, "is 5 bytes; AES needs 16, 24 or 32"),
    ({"DP_PAYLOAD_KEYS_FILE": "/nonexistent/keys"}, "cannot read DP_PAYLOAD_KEYS_FILE /nonexistent/keys"),
    ({"DP_PAYLOAD_CODECS": "zlib", "DP_PAYLOAD_COMPRESS_MIN": "lots"}, "DP_PAYLOAD_COMPRESS_MIN must be a number"),
])
def test_bad_settings_are_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        payloads.from_env(env)


def test_display_opens_what_it_can_and_says_what_it_cannot() -> None:
    payloads.configure([AesGcm({"k1": K1})])
    p = to_payload(SECRET)
    assert jsonable_payload(p) == {"encoding": "json/plain", "json": SECRET}  # type: ignore[arg-type]
    payloads.configure(None)
    shown = jsonable_payload(p)  # type: ignore[arg-type]
    assert shown is not None and shown["summary"].startswith("<encrypted with key 'k1', ")
    assert "no payload keys" in shown["unopened"] and "4111" not in json.dumps(shown)


def test_pydantic_models_convert_like_dataclasses() -> None:
    import pydantic  # a dev dependency: the converter itself only duck-types models

    class Order(pydantic.BaseModel):
        sku: str
        qty: int

    p = to_payload(Order(sku="A1", qty=2))
    assert json.loads(p["data"]) == {"sku": "A1", "qty": 2}
    got = from_payload(p, Order)
    assert isinstance(got, Order) and got == Order(sku="A1", qty=2)
    assert from_payload(to_payload({"sku": "B", "qty": "3"}), Order) == Order(sku="B", qty=3)  # its coercion
    with pytest.raises(PayloadError, match="cannot build .*Order from payload"):
        from_payload(to_payload({"sku": "B"}), Order)


def test_workflow_code_encrypts_its_commands_payloads() -> None:
    """Inside an activation os.urandom is refused (the guard); the codec's nonce is not."""
    Sim = _sim_class()
    from processor import workflow

    @workflow.defn(name="Sealer")
    class Sealer:
        @workflow.run
        async def run(self, secret: str) -> str:
            got: str = await workflow.execute_activity("seal", secret)
            return got

    payloads.configure([AesGcm({"k1": K1})])
    sim = Sim(Sealer)
    done = sim.start("top secret")
    assert done.error is None, done.error
    [scheduled] = done.commands
    [arg] = scheduled["args"]
    assert arg["encoding"] == "binary/encrypted" and from_payload(arg) == "top secret"
    sim.instance.close()


def test_a_codec_of_the_users_is_a_layer_like_ours() -> None:
    class Rot13:
        encoding = "binary/rot13"

        def encode(self, payload: dict) -> dict:  # type: ignore[type-arg]
            return {"encoding": self.encoding, "data": bytes([len(payload["encoding"])]) + payload["encoding"].encode()
                    + bytes((b + 13) % 256 for b in payload["data"])}

        def decode(self, payload: dict) -> dict:  # type: ignore[type-arg]
            data = payload["data"]
            n = data[0]
            return {"encoding": data[1:1 + n].decode(), "data": bytes((b - 13) % 256 for b in data[1 + n:])}

    payloads.configure([Rot13(), AesGcm({"k1": K1})])  # type: ignore[list-item]
    p = to_payload(SECRET)
    assert p["encoding"] == "binary/encrypted"
    assert from_payload(p) == SECRET
    payloads.configure([Rot13()])  # type: ignore[list-item]
    only = to_payload(SECRET)
    assert only["encoding"] == "binary/rot13" and from_payload(only) == SECRET
    payloads.configure(None)
    with pytest.raises(PayloadError, match="unknown payload encoding 'binary/rot13'"):
        from_payload(only)


def test_a_zlib_bomb_is_refused_not_inflated() -> None:
    bomb = {"encoding": "binary/zlib", "data": b"\x0cbinary/plain" + zlib.compress(bytes(64 * 2**20), 9)}
    assert len(bomb["data"]) < 100_000
    with pytest.raises(PayloadError, match="inflates to more than 16 MiB: refused"):
        from_payload(bomb)  # type: ignore[arg-type]


def test_a_codec_of_the_users_may_read_the_clock_inside_workflow_code() -> None:
    import time

    Sim = _sim_class()
    from processor import workflow

    class Stamped:
        encoding = "binary/x-stamped"

        def encode(self, payload: dict) -> dict:  # type: ignore[type-arg]
            stamp = str(time.time()).encode()  # refused in workflow code, unless the guard is suspended
            return {"encoding": self.encoding, "data": bytes([len(stamp)]) + stamp + bytes([len(payload["encoding"])])
                    + payload["encoding"].encode() + payload["data"]}

        def decode(self, payload: dict) -> dict:  # type: ignore[type-arg]
            data = payload["data"]
            rest = data[1 + data[0]:]
            return {"encoding": rest[1:1 + rest[0]].decode(), "data": rest[1 + rest[0]:]}

    @workflow.defn(name="StampedFlow")
    class StampedFlow:
        @workflow.run
        async def run(self, x: str) -> str:
            got: str = await workflow.execute_activity("echo", x)
            return got

    payloads.configure([Stamped()])  # type: ignore[list-item]
    sim = Sim(StampedFlow)
    done = sim.start("hello")
    assert done.error is None, done.error
    [scheduled] = done.commands
    assert scheduled["args"][0]["encoding"] == "binary/x-stamped" and from_payload(scheduled["args"][0]) == "hello"
    sim.instance.close()


def test_a_bad_setting_fails_the_client_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from processor.client import Client

    monkeypatch.setenv("DP_PAYLOAD_CODECS", "rot13")
    with pytest.raises(ConfigError, match="DP_PAYLOAD_CODECS names 'rot13'"):
        Client("127.0.0.1:1")


def test_a_result_the_processor_has_no_key_for_holds_the_workflow() -> None:
    """Workflow code never sees a PayloadKeyError (it could branch on it, and replay the other
    way once the key is there): the task fails, the workflow is held."""
    Sim = _sim_class()
    from processor import workflow
    from processor._runtime import WorkflowTaskError

    @workflow.defn(name="Careful")
    class Careful:
        @workflow.run
        async def run(self) -> str:
            try:
                got: str = await workflow.execute_activity("fetch")
                return got
            except Exception as exc:  # noqa: BLE001 - what a careless workflow does
                return f"caught {exc}"

    sim = Sim(Careful)
    sim.start()
    payloads.configure([AesGcm({"k1": K1})])
    sealed = to_payload("secret result")
    payloads.configure(None)
    event = sim._append({"type": "ActivityCompleted", "activity_seq": 1, "attempt": 1, "result": sealed})
    done = sim.instance.activate([event])
    assert isinstance(done.error, WorkflowTaskError) and "no payload keys" in str(done.error)
    assert done.commands == []
    sim.instance.close()


def test_a_converter_of_the_users_takes_its_types_and_goes_through_the_codecs() -> None:
    from decimal import Decimal

    class Decimals:
        encoding = "text/decimal"

        def to_payload(self, value: object) -> dict | None:  # type: ignore[type-arg]
            return {"encoding": self.encoding, "data": str(value).encode()} if isinstance(value, Decimal) else None

        def from_payload(self, payload: dict, type_hint: object) -> Decimal:  # type: ignore[type-arg]
            return Decimal(payload["data"].decode())

    with pytest.raises(PayloadError, match="cannot convert a value of type Decimal"):
        to_payload(Decimal("10.25"))
    payloads.configure(None, converters=[Decimals()])  # type: ignore[list-item]
    p = to_payload(Decimal("10.25"))
    assert p == {"encoding": "text/decimal", "data": b"10.25"}
    assert from_payload(p) == Decimal("10.25")
    assert to_payload({"a": 1})["encoding"] == "json/plain", "other values: the built-in converter"
    payloads.configure([AesGcm({"k1": K1})], converters=[Decimals()])  # type: ignore[list-item]
    sealed = to_payload(Decimal("-3.5"))
    assert sealed["encoding"] == "binary/encrypted" and b"-3.5" not in sealed["data"]
    assert from_payload(sealed) == Decimal("-3.5")
