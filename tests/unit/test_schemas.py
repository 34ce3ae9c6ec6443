"""The schemas folder and its fingerprint lock: the evolution gate of the wire contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from processor._codec import Codec
from processor._codec.lock import check, compatibility_problems, main, read_lock, release, write_lock
from processor._codec.schemas import load_schemas
from processor._resources import schemas_dir
from processor.exceptions import ConfigError, DecodeError

# Every record of docs/model.md.
MODEL_RECORDS = sorted(
    [f"wf.common.v1.{n}" for n in ("Payload", "Failure", "RetryPolicy", "SearchAttributeValue")]
    + [
        f"wf.commands.v1.{n}"
        for n in (
            "StartWorkflow SignalWorkflow CancelWorkflow TerminateWorkflow "
            "ActivityCompleted ActivityFailed ActivityHeartbeat ActivityStarted QueryWorkflow ChildWorkflowResult "
            "WorkflowHandOff HandOffDone "
            "UpdateWorkflow"
        ).split()
    ]
    + [
        f"wf.events.v1.{n}"
        for n in (
            "WorkflowStarted SignalReceived WorkflowCancelRequested ActivityCompleted ActivityFailed "
            "ActivityTimedOut TimerFired ChildWorkflowCompleted ActivityScheduled TimerStarted TimerCanceled "
            "ChildWorkflowStarted WorkflowCompleted WorkflowFailed WorkflowCanceled WorkflowTerminated "
            "WorkflowTimedOut ActivityAttemptFailed WorkflowTaskFailed WorkflowTaskRecovered "
            "WorkflowContinuedAsNew PatchMarker SideEffectRecorded ChildWorkflowSignaled ChildWorkflowCancelRequested "
            "WorkflowUpdateAccepted WorkflowUpdateCompleted SearchAttributesUpserted LocalActivityRecorded"
        ).split()
    ]
    + [
        f"wf.completions.v1.{n}"
        for n in ("WorkflowCompleted WorkflowFailed WorkflowCanceled WorkflowTerminated WorkflowTimedOut "
                  "WorkflowContinuedAsNew").split()
    ]
    + ["wf.tasks.v1.ActivityTask", "wf.tasks.v1.ActivityCancel", "wf.timers.v1.TimerScheduled",
       "wf.replies.v1.CommandReply"]
)

START = "wf.commands.v1.StartWorkflow"
START_VERSION = len(read_lock(schemas_dir() / "fingerprints.lock")[START])  # its latest released version


@pytest.fixture
def tmp_schemas(tmp_path: Path) -> Path:
    """A private copy of schemas/ (with its lock) that a test may change and release."""
    folder = tmp_path / "schemas"
    shutil.copytree(schemas_dir(), folder)
    return folder


def _edit(folder: Path, relative: str, change: Any) -> None:
    path = folder / relative
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_every_model_record_has_a_schema() -> None:
    assert sorted(load_schemas(schemas_dir())) == MODEL_RECORDS


def test_every_command_and_event_starts_with_the_common_fields() -> None:
    for name, schema in load_schemas(schemas_dir()).items():
        fields = [f["name"] for f in schema["fields"]]
        if ".commands." in name or ".completions." in name:
            assert fields[0] == "workflow_id", name
        if ".events." in name:
            assert fields[:3] == ["workflow_id", "seq", "time_ms"], name


def test_every_record_and_field_is_documented() -> None:
    for path in sorted(schemas_dir().rglob("*.avsc")):
        schema = json.loads(path.read_text())
        assert schema.get("doc"), path
        for field in schema["fields"]:
            assert field.get("doc"), f"{path}: field {field['name']}"


def test_one_record_per_file_named_after_it() -> None:
    for path in schemas_dir().rglob("*.avsc"):
        assert json.loads(path.read_text())["name"] == path.stem


def test_committed_lock_matches_the_schemas() -> None:
    folder = schemas_dir()
    assert check(folder, folder / "fingerprints.lock") == []


def test_every_schema_is_compatible_with_its_released_versions() -> None:
    folder = schemas_dir()
    lock = read_lock(folder / "fingerprints.lock")
    for name, schema in load_schemas(folder).items():
        assert compatibility_problems(name, schema, lock[name]) == [], name


def test_lock_file_is_stable(tmp_schemas: Path) -> None:
    lock = tmp_schemas / "fingerprints.lock"
    before = lock.read_bytes()
    assert release(tmp_schemas, lock) == [], "nothing changed: nothing to release"
    write_lock(lock, read_lock(lock))
    assert lock.read_bytes() == before


def test_a_fresh_lock_releases_every_record_once_at_v1(tmp_schemas: Path) -> None:
    lock = tmp_schemas / "fingerprints.lock"
    lock.unlink()
    release(tmp_schemas, lock)
    assert {name: [e.version for e in entries] for name, entries in read_lock(lock).items()} == {
        name: [1] for name in MODEL_RECORDS}


def test_changing_a_released_schema_fails_check(tmp_schemas: Path) -> None:
    _edit(tmp_schemas, "commands/StartWorkflow.avsc", lambda s: _field(s, "workflow_type").update(type="bytes"))
    problems = check(tmp_schemas, tmp_schemas / "fingerprints.lock")
    assert len(problems) == 1
    assert f"{START} changed since its released v{START_VERSION}" in problems[0]
    assert main(["check", "--schemas", str(tmp_schemas)]) == 1


def test_check_passes_on_the_real_schemas_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    assert f"up to date ({len(MODEL_RECORDS)} records)" in capsys.readouterr().out


def test_doc_only_change_needs_release_but_no_new_version(tmp_schemas: Path) -> None:
    lock = tmp_schemas / "fingerprints.lock"
    _edit(tmp_schemas, "commands/StartWorkflow.avsc", lambda s: s.update(doc="Reworded."))
    assert "docs, defaults or aliases" in check(tmp_schemas, lock)[0]
    assert release(tmp_schemas, lock) == [f"{START} v{START_VERSION} updated in place (docs/defaults; fingerprint "
                                          + _fp(lock) + ")"]
    assert [e.version for e in read_lock(lock)[START]] == list(range(1, START_VERSION + 1))
    assert check(tmp_schemas, lock) == []


def _fp(lock: Path) -> str:
    return read_lock(lock)[START][-1].fingerprint


def test_releasing_a_type_change_is_refused(tmp_schemas: Path) -> None:
    lock = tmp_schemas / "fingerprints.lock"
    before = lock.read_bytes()
    _edit(tmp_schemas, "events/TimerFired.avsc", lambda s: _field(s, "timer_seq").update(type="string"))
    with pytest.raises(ConfigError) as refused:
        release(tmp_schemas, lock)
    message = str(refused.value)
    assert "wf.events.v1.TimerFired: the new schema cannot read v1 data: type_mismatch at /fields/3/type" in message
    assert "reader type: string not compatible with writer type: long" in message
    assert "v1 readers cannot read data of the new schema" in message
    assert lock.read_bytes() == before


def test_releasing_a_removed_field_without_default_is_refused(tmp_schemas: Path) -> None:
    def drop(schema: dict[str, Any]) -> None:
        schema["fields"] = [f for f in schema["fields"] if f["name"] != "timer_seq"]

    _edit(tmp_schemas, "events/TimerFired.avsc", drop)
    with pytest.raises(
        ConfigError,
        match="v1 readers cannot read data of the new schema: "
        "reader_field_missing_default_value at /fields/3: timer_seq",
    ):
        release(tmp_schemas, tmp_schemas / "fingerprints.lock")


def test_adding_a_field_without_default_is_refused(tmp_schemas: Path) -> None:
    _edit(
        tmp_schemas, "events/TimerFired.avsc", lambda s: s["fields"].append({"name": "x", "type": "long", "doc": "d"})
    )
    with pytest.raises(ConfigError, match="the new schema cannot read v1 data: reader_field_missing_default_value"):
        release(tmp_schemas, tmp_schemas / "fingerprints.lock")


def test_added_field_with_default_is_released_as_v2_and_v1_bytes_still_decode(tmp_schemas: Path) -> None:
    lock = tmp_schemas / "fingerprints.lock"
    v1 = Codec.from_dir(schemas_dir(), schemas_dir() / "fingerprints.lock")
    name = "wf.events.v1.TimerFired"  # still at v1
    record = {"workflow_id": "w", "seq": 3, "time_ms": 5, "timer_seq": 1}
    v1_bytes = v1.encode(name, record)

    new_field = {"name": "priority", "type": "int", "default": 3, "doc": "Scheduling priority."}
    _edit(tmp_schemas, "events/TimerFired.avsc", lambda s: s["fields"].append(new_field))
    assert release(tmp_schemas, lock) == [f"{name} v2 released (fingerprint {read_lock(lock)[name][-1].fingerprint})"]
    entries = read_lock(lock)[name]
    assert [e.version for e in entries] == [1, 2]
    assert check(tmp_schemas, lock) == []

    v2 = Codec.from_dir(tmp_schemas, lock)
    assert v2.decode(v1_bytes) == (name, {**record, "priority": 3})
    v2_bytes = v2.encode(name, {**record, "priority": 9})
    assert v2_bytes[2:10].hex() == entries[1].fingerprint != entries[0].fingerprint
    assert v2.decode(v2_bytes) == (name, {**record, "priority": 9})
    # Without the lock a codec knows only current schemas, so v1 data is not readable: the lock is
    # what carries old writer schemas.
    with pytest.raises(DecodeError, match="unknown schema fingerprint " + entries[0].fingerprint):
        Codec.from_dir(tmp_schemas).decode(v1_bytes)


def test_new_record_is_released_as_v1(tmp_schemas: Path) -> None:
    lock = tmp_schemas / "fingerprints.lock"
    (tmp_schemas / "commands" / "PingWorkflow.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "PingWorkflow",
                "namespace": "wf.commands.v1",
                "doc": "d",
                "fields": [
                    {"name": "workflow_id", "type": "string", "doc": "d"},
                    {"name": "payload", "type": "wf.common.v1.Payload", "doc": "d"},
                ],
            }
        )
    )
    assert "wf.commands.v1.PingWorkflow is new and not released yet" in check(tmp_schemas, lock)[0]
    assert main(["release", "--schemas", str(tmp_schemas)]) == 0
    assert [e.version for e in read_lock(lock)["wf.commands.v1.PingWorkflow"]] == [1]
    # The stored schema is self-contained: the shared Payload record is inlined.
    stored = read_lock(lock)["wf.commands.v1.PingWorkflow"][0].schema
    assert _field(stored, "payload")["type"]["name"] == "Payload"


def test_deleting_a_released_record_fails_check_and_release(tmp_schemas: Path) -> None:
    (tmp_schemas / "events" / "TimerCanceled.avsc").unlink()
    lock = tmp_schemas / "fingerprints.lock"
    assert "wf.events.v1.TimerCanceled is released" in check(tmp_schemas, lock)[0]
    with pytest.raises(ConfigError, match="TimerCanceled is released but its .avsc is gone"):
        release(tmp_schemas, lock)


def test_a_tampered_released_fingerprint_fails_check(tmp_schemas: Path) -> None:
    lock = tmp_schemas / "fingerprints.lock"
    data = json.loads(lock.read_text())
    data[START][0]["fingerprint"] = "00" * 8
    lock.write_text(json.dumps(data))
    problems = check(tmp_schemas, lock)
    assert any("released fingerprints must never change" in p for p in problems), problems


def test_unresolvable_reference_is_a_config_error(tmp_schemas: Path) -> None:
    _edit(tmp_schemas, "commands/CancelWorkflow.avsc", lambda s: _field(s, "reason").update(type="wf.nope.v1.X"))
    with pytest.raises(ConfigError, match=r"CancelWorkflow.avsc: refers to unknown type 'wf.nope.v1.X'"):
        load_schemas(tmp_schemas)
