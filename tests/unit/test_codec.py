"""The wire codec: round trips, the exact byte layout, errors that say what was wrong, and the
worked example in docs/protocol.md (so the document cannot drift from the code)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest

from processor._codec import Codec, default_codec, murmur2, partition_for
from processor._codec.schemas import load_schemas
from processor._resources import schemas_dir
from processor.exceptions import DecodeError, PayloadError

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = load_schemas(schemas_dir())
LOCK = json.loads((schemas_dir() / "fingerprints.lock").read_text())


def sample(schema: Any, *, full: bool, named: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value for `schema`, built from the schema alone. `full` takes the non-null branch of every
    union in the top record and its direct children (so a recursive Failure gets one cause) and
    fills arrays; otherwise nulls and empties."""
    named = {} if named is None else named
    if isinstance(schema, str):
        simple = {
            "null": None,
            "boolean": full,
            "int": -7 if full else 0,
            "long": 2**40 + depth if full else 0,
            "float": 0.5,
            "double": 1.25 if full else 0.0,
            "bytes": b"\x00\xff\xc3\x01" if full else b"",
            "string": f"é-{depth}-✓" if full else "",
        }
        if schema in simple:
            return simple[schema]
        return sample(named[schema], full=full, named=named, depth=depth)
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if full and branches and depth < 2:
            return sample(branches[0], full=full, named=named, depth=depth)
        return None if "null" in schema else sample(schema[0], full=full, named=named, depth=depth)
    kind = schema["type"]
    if kind == "record":
        named[schema["name"] if "." in schema["name"] else f"{schema['namespace']}.{schema['name']}"] = schema
        return {f["name"]: sample(f["type"], full=full, named=named, depth=depth + 1) for f in schema["fields"]}
    if kind == "array":
        return [sample(schema["items"], full=full, named=named, depth=depth) for _ in range(2 if full else 0)]
    if kind == "map":
        return {f"k{i}": sample(schema["values"], full=full, named=named, depth=depth) for i in range(2 if full else 0)}
    return sample(kind, full=full, named=named, depth=depth)


def _has_union_both_ways(name: str) -> bool:
    return '["null"' in json.dumps(SCHEMAS[name])


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


def test_codec_knows_every_schema_file(codec: Codec) -> None:
    assert codec.names() == sorted(SCHEMAS)
    assert len(codec.names()) == len(list(schemas_dir().rglob("*.avsc")))


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_record_round_trips(codec: Codec, name: str, full: bool) -> None:
    record = sample(SCHEMAS[name], full=full)
    data = codec.encode(name, record)
    assert codec.decode(data) == (name, record)
    assert codec.decode_as(data, name) == record


def test_samples_cover_both_union_branches_and_nesting() -> None:
    # Guards the generator itself: a sampler that always chose null would make the round trip vacuous.
    full = sample(SCHEMAS["wf.events.v1.ActivityScheduled"], full=True)
    assert full["retry_policy"]["non_retryable_error_types"] == ["é-2-✓", "é-2-✓"]
    assert full["args"][0]["data"] == b"\x00\xff\xc3\x01"
    failure = sample(SCHEMAS["wf.common.v1.Failure"], full=True)
    assert failure["cause"] is not None and failure["cause"]["cause"] is None
    assert sample(SCHEMAS["wf.events.v1.ActivityScheduled"], full=False)["retry_policy"] is None
    assert _has_union_both_ways("wf.events.v1.ChildWorkflowCompleted")


def test_byte_layout_is_magic_fingerprint_body(codec: Codec) -> None:
    data = codec.encode("wf.commands.v1.CancelWorkflow", {"workflow_id": "a", "reason": "b"})
    fingerprint = LOCK["wf.commands.v1.CancelWorkflow"][-1]["fingerprint"]
    # Body by hand from the Avro spec: each string is a zigzag varint length (1 -> 02) then UTF-8;
    # then run_id, request_id, reply_partition, parent_workflow_id and parent_run_id, each a
    # [null, ...] union at branch 0 (null).
    assert data == b"\xc3\x01" + bytes.fromhex(fingerprint) + b"\x02a\x02b\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_fingerprint_agrees_with_the_reference_implementation(codec: Codec, name: str) -> None:
    # The avro package follows Java's SchemaNormalization, which Java/Go producers will use.
    reference = avro.schema.parse(json.dumps(SCHEMAS[name])).fingerprint("CRC-64-AVRO")
    assert codec.encode(name, sample(SCHEMAS[name], full=False))[2:10] == reference


def test_body_is_plain_avro_binary(codec: Codec) -> None:
    name = "wf.events.v1.ActivityScheduled"
    record = sample(SCHEMAS[name], full=True)
    body = codec.encode(name, record)[10:]
    assert fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(SCHEMAS[name])) == record


def test_encode_fills_defaults(codec: Codec) -> None:
    name = "wf.commands.v1.StartWorkflow"
    data = codec.encode(name, {"workflow_id": "w", "workflow_type": "T", "args": []})
    assert codec.decode_as(data, name) == {
        "workflow_id": "w",
        "workflow_type": "T",
        "args": [],
        "task_queue": "default",
        "execution_timeout_ms": None,
        "request_id": None,
        "id_reuse_policy": "allow_duplicate",
        "if_exists": "use_existing",
        "reply_partition": None,
        "parent_workflow_id": None,
        "parent_run_id": None,
        "parent_child_seq": None,
        "signal_name": None,
        "signal_args": [],
        "search_attributes": {},
        "memo": {},
    }


def test_garbage_is_rejected_with_its_first_bytes(codec: Codec) -> None:
    with pytest.raises(DecodeError, match=r"starts with 7b 22 77 6f .*expected c3 01"):
        codec.decode(b'{"workflow_id": "x"}')


@pytest.mark.parametrize("cut", [0, 1, 2, 9])
def test_too_short_is_rejected(codec: Codec, cut: int) -> None:
    data = codec.encode("wf.events.v1.TimerFired", sample(SCHEMAS["wf.events.v1.TimerFired"], full=True))
    with pytest.raises(DecodeError, match=f"too short: {cut} bytes"):
        codec.decode(data[:cut])


def test_truncated_body_names_the_schema(codec: Codec) -> None:
    name = "wf.commands.v1.StartWorkflow"
    data = codec.encode(name, sample(SCHEMAS[name], full=True))
    with pytest.raises(DecodeError, match=r"body of a wf\.commands\.v1\.StartWorkflow record .* does not parse"):
        codec.decode(data[:-3])


def test_unknown_fingerprint_is_shown(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="unknown schema fingerprint 0102030405060708"):
        codec.decode(b"\xc3\x01" + bytes(range(1, 9)) + b"\x02a\x02b")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        # A string length varint that never ends.
        (b"\xff" * 12, "does not parse"),
        # A union branch index (3) that the [null, long] union does not have.
        (b"\x02a\x02T\x00\x0edefault\x06", "does not parse"),
        # A valid record followed by bytes that belong to nothing.
        (b"\x02a\x02T\x00\x0edefault\x00\x00\x1eallow_duplicate\x18use_existing\x00\x00\x00\x00\x00\x00\x00\x00\x00",
         "1 unexpected trailing bytes after a wf.commands.v1.StartWorkflow"),
    ],
    ids=["endless-varint", "bad-union-index", "trailing-bytes"],
)
def test_corrupt_body_is_rejected(codec: Codec, body: bytes, why: str) -> None:
    good = codec.encode("wf.commands.v1.StartWorkflow", {"workflow_id": "a", "workflow_type": "T", "args": []})
    with pytest.raises(DecodeError, match=re.escape(why)):
        codec.decode(good[:10] + body)


def test_invalid_utf8_in_a_string_is_rejected(codec: Codec) -> None:
    good = codec.encode("wf.commands.v1.CancelWorkflow", {"workflow_id": "a", "reason": "b"})
    with pytest.raises(DecodeError, match="CancelWorkflow"):
        codec.decode(good[:10] + b"\x02\xff\x02b")


def test_decode_as_rejects_another_type(codec: Codec) -> None:
    data = codec.encode("wf.commands.v1.CancelWorkflow", {"workflow_id": "a", "reason": ""})
    with pytest.raises(DecodeError, match="expected a wf.commands.v1.TerminateWorkflow record, got a wf.commands.v1"):
        codec.decode_as(data, "wf.commands.v1.TerminateWorkflow")


def test_encode_names_the_field_that_does_not_fit(codec: Codec) -> None:
    with pytest.raises(PayloadError, match=r"StartWorkflow record does not fit.*StartWorkflow\.workflow_type"):
        codec.encode("wf.commands.v1.StartWorkflow", {"workflow_id": "a", "args": []})
    with pytest.raises(PayloadError, match=r"wf\.common\.v1\.Payload\.data is <x> .* expected bytes"):
        codec.encode(
            "wf.commands.v1.StartWorkflow",
            {"workflow_id": "a", "workflow_type": "T", "args": [{"encoding": "json/plain", "data": "x"}]},
        )
    with pytest.raises(PayloadError, match="unknown record type 'wf.nope.v1.X'"):
        codec.encode("wf.nope.v1.X", {})


def test_headers_round_trip(codec: Codec) -> None:
    for name in codec.names():
        headers = codec.headers(name)
        assert headers == [("type", name.encode())]
        assert codec.headers(name) is headers  # built once, not per record
        assert codec.type_from_headers([("traceparent", b"00-1"), *headers]) == name
    assert codec.type_from_headers(None) is None
    assert codec.type_from_headers([]) is None
    assert codec.type_from_headers([("other", b"x"), ("type", None)]) is None
    with pytest.raises(DecodeError, match="type header is not UTF-8"):
        codec.type_from_headers([("type", b"\xff")])
    with pytest.raises(PayloadError):
        codec.headers("wf.nope.v1.X")


def test_decode_checked_refuses_a_type_header_that_names_another_record(codec: Codec) -> None:
    cancel = "wf.commands.v1.CancelWorkflow"
    value = codec.encode(cancel, {"workflow_id": "w", "reason": "r"})
    assert codec.decode_checked(value, codec.headers(cancel)) == (
        cancel, {"workflow_id": "w", "reason": "r", "run_id": None, "request_id": None, "reply_partition": None,
                 "parent_workflow_id": None, "parent_run_id": None})
    assert codec.decode_checked(value, None)[0] == cancel  # a header-less producer is not refused
    assert codec.decode_checked(value, [("traceparent", b"00-1")])[0] == cancel
    with pytest.raises(DecodeError, match=r"^the type header says wf\.commands\.v1\.TerminateWorkflow but the "
                       r"body's schema fingerprint is that of wf\.commands\.v1\.CancelWorkflow: .*"
                       r"fix it to send type=wf\.commands\.v1\.CancelWorkflow$"):
        codec.decode_checked(value, codec.headers("wf.commands.v1.TerminateWorkflow"))
    with pytest.raises(DecodeError, match="type header is not UTF-8"):
        codec.decode_checked(value, [("type", b"\xff")])
    with pytest.raises(DecodeError, match="not an Avro single-object"):  # a body that does not parse says so
        codec.decode_checked(b"{}", codec.headers(cancel))


def test_default_codec_is_shared() -> None:
    assert default_codec() is default_codec()


# --- the partitioner -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # Kafka's UtilsTest.testMurmur2 (clients/src/test/java/org/apache/kafka/common/utils).
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
        # Every tail length (len % 4 = 1, 2, 3, 0), from Akka's tests against Kafka's Utils.murmur2.
        ("1", -1993445489),
        ("12", 126087238),
        ("123", -267702483),
        ("1234", -1614185708),
        ("12345", -1188365604),
    ],
)
def test_murmur2_matches_kafka(key: str, expected: int) -> None:
    assert murmur2(key.encode()) == expected


def test_partition_for_clears_the_sign_bit() -> None:
    # -973932308 & 0x7fffffff = 1173551340; % 8 = 4 (abs() would give 4 too, so also check % 7).
    assert partition_for(b"21", 8) == 1173551340 % 8
    assert partition_for(b"21", 7) == 1173551340 % 7
    assert partition_for(b"abc", 1) == 0


# --- docs/protocol.md stays true -------------------------------------------------------------

EXAMPLE_RECORD = {
    "workflow_id": "order-1",
    "workflow_type": "OrderWorkflow",
    "args": [{"encoding": "json/plain", "data": b'{"sku":"A1","qty":2}'}],
    "task_queue": "default",
    "execution_timeout_ms": None,
    "request_id": None,
}


def _doc_block(marker: str) -> str:
    text = (ROOT / "docs" / "protocol.md").read_text()
    found = re.search(rf"<!-- {marker} -->(.*?)<!-- /{marker} -->", text, re.S)
    assert found, f"docs/protocol.md lacks the <!-- {marker} --> block"
    return found.group(1)


def test_protocol_doc_hex_example_is_what_the_codec_writes(codec: Codec) -> None:
    block = _doc_block("example-hex")
    hex_text = "".join(re.findall(r"^\s*((?:[0-9a-f]{2} ?)+)\s*$", block, re.M))
    assert bytes.fromhex(hex_text) == codec.encode("wf.commands.v1.StartWorkflow", EXAMPLE_RECORD)


def test_protocol_doc_breakdown_covers_every_byte(codec: Codec) -> None:
    block = _doc_block("example-breakdown")
    rows = re.findall(r"^\|\s*`([0-9a-f ]+)`\s*\|", block, re.M)
    assert bytes.fromhex("".join(rows)) == codec.encode("wf.commands.v1.StartWorkflow", EXAMPLE_RECORD)


def test_protocol_doc_partition_example() -> None:
    block = _doc_block("example-partition")
    stated = re.search(r"murmur2\(\"order-1\"\) = (-?\d+).*partition (\d+) of 8", block, re.S)
    assert stated, block
    assert int(stated.group(1)) == murmur2(b"order-1")
    assert int(stated.group(2)) == partition_for(b"order-1", 8)
