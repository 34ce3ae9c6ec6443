"""Payload codecs: compression and encryption applied to every payload before it reaches Kafka.

A codec turns a Payload `{encoding, data}` into another one and back. The converter
(processor/_payload.py) makes the plain payload of a value; the configured codecs then wrap it,
in order, on every process that writes one (clients, processors, workers); every reader unwraps
whatever layers a payload carries, by its encoding, so the order is only the writer's choice.
The layers' bytes are documented in docs/protocol.md#payload-codecs, for readers in other
languages.

    binary/zlib       u8 len(E) | E | zlib(data)                 E: the inner encoding, UTF-8
    binary/encrypted  u8 1 | u8 len(K) | K | nonce(12) | AES-GCM(key K, nonce, u8 len(E) | E | data,
                      associated data = u8 1 | K) (ciphertext and its 16-byte tag)

Configured from the environment of each process (so `processor run` passes it to its children):

    DP_PAYLOAD_CODECS=zlib,aes-gcm       the codecs, in the order they are applied when writing
    DP_PAYLOAD_KEYS=k2:BASE64,k1:BASE64  AES keys (16, 24 or 32 bytes, base64) by key id; the
                                          first encrypts, all decrypt (rotation: add the new key
                                          first, keep the old ones while their payloads live)
    DP_PAYLOAD_KEYS_FILE=/run/secrets/dp  the same, one `id:base64` a line (# comments)
    DP_PAYLOAD_COMPRESS_MIN=256           zlib only payloads of at least this many bytes

or in Python, before the first payload: `payloads.configure([Zlib(), AesGcm({"k2": key})])`.
`configure(..., converters=[...])` adds converters for values of your own types (a
PayloadConverter: its own encoding name, to_payload, from_payload), tried before the built-in
JSON one; their payloads go through the codecs like any other. A
codec of your own is any object with `encoding` (a name of its own, e.g. `binary/x-kms`),
`encode` and `decode`: readers configured with it unwrap its layer like ours.
Keys are never logged. What stays in clear: the workflow id, types and names, timestamps,
search attributes (visibility indexes them), failure messages and stack traces.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from processor.exceptions import ConfigError, PayloadError, PayloadKeyError

if TYPE_CHECKING:
    from processor._payload import Payload

__all__ = ["AesGcm", "PayloadCodec", "PayloadConverter", "Zlib", "configure", "decode", "describe", "reset"]

# The nonce's entropy. Workflow code is refused os.urandom (processor/_runtime/_guard.py wraps it)
# because its result would differ on replay; a payload the runtime encrypts for workflow code is
# not replayed (history keeps the bytes, and commands are matched by identity, not payload), so
# the codec calls the unwrapped function.
_urandom = getattr(os.urandom, "__wrapped__", os.urandom)

ZLIB = "binary/zlib"
ENCRYPTED = "binary/encrypted"
_OURS = frozenset((ZLIB, ENCRYPTED))
# A compressed payload inflates to at most this: a 1 MB record must not become gigabytes in a
# processor (on every replay). A payload is at most ~1 MB before compression anyway (_limits.py).
MAX_INFLATED = 16 * 2**20
_VERSION = 1
_NONCE = 12


class PayloadConverter(Protocol):
    """Values of your own types to payloads and back, tried before the built-in JSON one:
    `to_payload` returns None for a value that is not of its types; `from_payload` gets every
    payload whose encoding is its `encoding` (a name of its own, e.g. `binary/msgpack`)."""

    encoding: str

    def to_payload(self, value: Any) -> Payload | None: ...

    def from_payload(self, payload: Payload, type_hint: object) -> Any: ...


class PayloadCodec(Protocol):
    """One layer: `encode` wraps a payload, `decode` unwraps one that has its `encoding`."""

    encoding: str

    def encode(self, payload: Payload) -> Payload: ...

    def decode(self, payload: Payload) -> Payload: ...


def _inner(encoding: str) -> bytes:
    raw = encoding.encode()
    if len(raw) > 255:
        raise PayloadError(f"payload encoding {encoding[:40]!r}... is over 255 bytes")
    return bytes([len(raw)]) + raw


def _split_inner(body: bytes, what: str) -> tuple[str, bytes]:
    if not body or len(body) < 1 + body[0]:
        raise PayloadError(f"{what} payload is truncated")
    n = body[0]
    try:
        return body[1:1 + n].decode(), body[1 + n:]
    except UnicodeDecodeError:
        raise PayloadError(f"{what} payload names its inner encoding in bytes that are not UTF-8") from None


class Zlib:
    """zlib (RFC 1950) of payloads of at least `min_size` bytes, kept only when it is smaller."""

    encoding = ZLIB

    def __init__(self, min_size: int = 256, level: int = 6) -> None:
        self.min_size, self.level = min_size, level

    def encode(self, payload: Payload) -> Payload:
        data = payload["data"]
        if len(data) < self.min_size:
            return payload
        packed = _inner(payload["encoding"]) + zlib.compress(data, self.level)
        return {"encoding": ZLIB, "data": packed} if len(packed) < len(data) else payload

    def decode(self, payload: Payload) -> Payload:
        encoding, body = _split_inner(bytes(payload["data"]), ZLIB)
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(body, MAX_INFLATED + 1)
        except zlib.error as exc:
            raise PayloadError(f"binary/zlib payload does not inflate: {exc}") from None
        if len(data) > MAX_INFLATED or inflater.unconsumed_tail:
            raise PayloadError(f"binary/zlib payload inflates to more than {MAX_INFLATED // 2**20} MiB: refused")
        return {"encoding": encoding, "data": data}


class AesGcm:
    """AES-GCM with a key id in each payload: `keys` maps key id -> 16/24/32-byte key; the
    `current` one (default: the first) encrypts, every one decrypts."""

    encoding = ENCRYPTED

    def __init__(self, keys: Mapping[str, bytes], current: str | None = None) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ConfigError("AesGcm needs at least one key (DP_PAYLOAD_KEYS=id:base64key)")
        for kid, key in keys.items():
            if not kid or len(kid.encode()) > 255 or ":" in kid or "," in kid:
                raise ConfigError(f"payload key id {kid!r} must be 1-255 bytes without ':' or ','")
            if len(key) not in (16, 24, 32):
                raise ConfigError(f"payload key {kid!r} is {len(key)} bytes; AES needs 16, 24 or 32")
        self.current = current if current is not None else next(iter(keys))
        if self.current not in keys:
            raise ConfigError(f"the current payload key {self.current!r} is not among the keys ({', '.join(keys)})")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self._head = {kid: bytes([_VERSION, len(kid.encode())]) + kid.encode() for kid in keys}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def encode(self, payload: Payload) -> Payload:
        head = self._head[self.current]
        nonce = _urandom(_NONCE)
        sealed = self._ciphers[self.current].encrypt(nonce, _inner(payload["encoding"]) + bytes(payload["data"]), head)
        return {"encoding": ENCRYPTED, "data": head + nonce + sealed}

    def decode(self, payload: Payload) -> Payload:
        from cryptography.exceptions import InvalidTag

        kid, head, nonce, sealed = key_id_of(payload)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise PayloadKeyError(f"the payload is encrypted with key id {kid!r}, which this process does not have "
                               f"(it has {', '.join(self._ciphers)}): add it to DP_PAYLOAD_KEYS")
        try:
            body = cipher.decrypt(nonce, sealed, head)
        except InvalidTag:
            raise PayloadKeyError(f"the payload encrypted with key id {kid!r} does not decrypt with this process's key "
                               f"{kid!r} (authentication failed): the key differs from the writer's, or the "
                               "payload was altered") from None
        encoding, data = _split_inner(body, ENCRYPTED)
        return {"encoding": encoding, "data": data}


def key_id_of(payload: Payload) -> tuple[str, bytes, bytes, bytes]:
    """An encrypted payload's (key id, header, nonce, ciphertext)."""
    data = bytes(payload["data"])
    if len(data) < 2 or data[0] != _VERSION or len(data) < 2 + data[1] + _NONCE + 16:
        raise PayloadError(f"binary/encrypted payload is truncated or of an unknown version "
                           f"({data[:1].hex() or 'empty'})")
    n = data[1]
    head = data[:2 + n]
    return head[2:].decode(errors="replace"), head, data[2 + n:2 + n + _NONCE], data[2 + n + _NONCE:]


class _Chain:
    def __init__(self, codecs: Sequence[PayloadCodec]) -> None:
        self.codecs = list(codecs)
        self.by_encoding = {c.encoding: c for c in self.codecs}
        self.layers = _OURS | frozenset(self.by_encoding)
        # A codec of the user's may read the clock or random (a KMS client, a nonce): inside
        # workflow code the determinism guard would refuse that, so it runs with the guard
        # suspended (payload bytes are never compared on replay). Ours need no such care.
        self.foreign = any(not isinstance(c, Zlib | AesGcm) for c in self.codecs)

    def encode(self, payload: Payload) -> Payload:
        if self.foreign:
            from processor._runtime import _guard

            with _guard.suspended():
                for codec in self.codecs:
                    payload = codec.encode(payload)
            return payload
        for codec in self.codecs:
            payload = codec.encode(payload)
        return payload

    def unwrap(self, codec: PayloadCodec, payload: Payload) -> Payload:
        if self.foreign:
            from processor._runtime import _guard

            with _guard.suspended():
                return codec.decode(payload)
        return codec.decode(payload)


_lock = threading.Lock()
CONVERTERS: list[PayloadConverter] = []  # configure(converters=...), tried in order by to_payload
CONVERTER_FOR: dict[str, PayloadConverter] = {}  # their encodings, for from_payload
_UNSET = object()
_chain: _Chain | None | object = _UNSET


def configure(codecs: Iterable[PayloadCodec] | None, *, converters: Iterable[PayloadConverter] = ()) -> None:
    """The codecs this process applies to the payloads it writes, in order (None or []: none;
    the environment is then not read), and the converters tried, in order, before the built-in
    one (JSON, dataclasses, pydantic models, bytes)."""
    global _chain
    with _lock:
        listed = list(codecs or [])
        _chain = _Chain(listed) if listed else None
        converters_list = list(converters)
        CONVERTERS[:] = converters_list
        CONVERTER_FOR.clear()
        CONVERTER_FOR.update({c.encoding: c for c in converters_list})


def reset() -> None:
    """Forget configure(): the environment is read again on the next payload (tests)."""
    global _chain
    with _lock:
        CONVERTERS.clear()
        CONVERTER_FOR.clear()
        _chain = _UNSET


def chain() -> _Chain | None:
    """The configured chain (from the environment on first use), None when there is none."""
    global _chain
    got = _chain
    if got is _UNSET:
        with _lock:
            if _chain is _UNSET:
                _chain = from_env(os.environ)
            got = _chain
    return got  # type: ignore[return-value]


def from_env(env: Mapping[str, str]) -> _Chain | None:
    names = [n.strip().lower() for n in env.get("DP_PAYLOAD_CODECS", "").split(",") if n.strip()]
    codecs: list[PayloadCodec] = []
    for name in names:
        if name == "zlib":
            codecs.append(Zlib(min_size=_int(env, "DP_PAYLOAD_COMPRESS_MIN", 256)))
        elif name in ("aes-gcm", "aesgcm", "aes"):
            codecs.append(AesGcm(parse_keys(env)))
        else:
            raise ConfigError(f"DP_PAYLOAD_CODECS names {name!r}: the codecs are zlib and aes-gcm")
    keys_given = bool(env.get("DP_PAYLOAD_KEYS") or env.get("DP_PAYLOAD_KEYS_FILE"))
    if keys_given and not any(isinstance(c, AesGcm) for c in codecs):
        codecs.append(AesGcm(parse_keys(env)))  # keys given: encryption meant, even if not listed
    return _Chain(codecs) if codecs else None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "")
    try:
        return int(text) if text else default
    except ValueError:
        raise ConfigError(f"{name} must be a number of bytes; got {text!r}") from None


def parse_keys(env: Mapping[str, str]) -> dict[str, bytes]:
    """DP_PAYLOAD_KEYS and the lines of DP_PAYLOAD_KEYS_FILE: `id:base64`, the first current."""
    entries: list[tuple[str, str]] = []
    text = env.get("DP_PAYLOAD_KEYS", "")
    entries += [(item, "DP_PAYLOAD_KEYS") for item in text.split(",") if item.strip()]
    path = env.get("DP_PAYLOAD_KEYS_FILE")
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read DP_PAYLOAD_KEYS_FILE {path}: {exc.strerror}") from None
        entries += [(line, f"{path} line {n}") for n, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#")]
    keys: dict[str, bytes] = {}
    for item, where in entries:
        kid, sep, b64 = item.strip().partition(":")
        if not sep or not kid.strip():
            raise ConfigError(f"{where}: expected key-id:base64-key, got {kid.strip()[:20]!r}...")
        try:
            keys[kid.strip()] = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: the key of id {kid.strip()!r} is not base64") from None
    if not keys:
        raise ConfigError("aes-gcm needs keys: set DP_PAYLOAD_KEYS=id:base64key (or DP_PAYLOAD_KEYS_FILE)")
    return keys


def layer_encodings() -> frozenset[str]:
    """The encodings a reader unwraps: ours, and those of the configured codecs."""
    configured = chain()
    return _OURS if configured is None else configured.layers


def decode(payload: Payload) -> Payload:
    """`payload` with every codec layer removed (a plain payload comes back as it is)."""
    configured = chain()
    layers = _OURS if configured is None else configured.layers
    while payload["encoding"] in layers:
        codec = configured.by_encoding.get(payload["encoding"]) if configured is not None else None
        if codec is not None and configured is not None:
            payload = configured.unwrap(codec, payload)
            continue
        if payload["encoding"] == ZLIB:
            payload = Zlib().decode(payload)
            continue
        kid = key_id_of(payload)[0]  # encrypted, and no AesGcm configured
        raise PayloadKeyError(f"the payload is encrypted with key id {kid!r} and this process has no payload keys: "
                           "set DP_PAYLOAD_KEYS (or DP_PAYLOAD_KEYS_FILE) as on the processes that wrote it")
    return payload


def describe(payload: Payload) -> str:
    """What an operator is shown of a payload this process cannot open: its layers and key id."""
    if payload["encoding"] == ENCRYPTED:
        try:
            return f"<encrypted with key {key_id_of(payload)[0]!r}, {len(payload['data'])} bytes>"
        except PayloadError as exc:
            return f"<{exc}>"
    return f"<{payload['encoding']} {len(payload['data'])} bytes>"


def opened(payload: Payload) -> tuple[Payload, str | None]:
    """For display (CLI, UI): the plain payload and None, or, when this process cannot open it,
    the payload as it is and the reason."""
    if payload["encoding"] not in layer_encodings():
        return payload, None
    try:
        return decode(payload), None
    except PayloadError as exc:
        return payload, str(exc)
