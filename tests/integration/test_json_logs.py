"""`processor run --log-format json` on a real broker (issue 10 item 7): every line the
supervisor and its children write is one JSON object; workflow.logger and activity.logger records
carry the workflow's id, run and type and the activity's seq and attempt; the engine's dead-letter
warning carries the partition and offset; each line names its process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Producer

from processor._kafka.topics import TopicNames
from processor.client import Client
from tests.dp_harness import Cluster, wait_for

pytestmark = pytest.mark.integration


def test_json_logs_of_a_supervised_processor_and_worker(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=2)
    client = Client(kafka_bootstrap, prefix=prefix)
    log = c.logs / "supervisor.log"

    def lines() -> list[dict[str, object]]:
        text = log.read_text() if log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]  # a non-JSON line fails here

    try:
        sup = c.supervisor(processors=1, workers=1, extra=["--log-format", "json"])
        handle = client.start_workflow("ThreeSteps", 5, id="logged-1")
        assert client.result("logged-1", timeout=120) == [6, 7, 8]
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(TopicNames(prefix).commands, b"junk", key=b"logged-junk", partition=1)
        producer.flush(10)
        wait_for(lambda: any("dead-lettered" in str(r["message"]) for r in lines()), 60,
                 message="the dead-letter warning logged")
        c.stop(sup)

        records = lines()
        assert records[0]["process"] == "supervisor" and str(records[0]["message"]).startswith("running 1 processor")
        wf = [r for r in records if r["logger"] == "processor.workflow"]
        assert wf and wf[0]["message"] == "three steps from 5"
        assert (wf[0]["workflow_id"], wf[0]["run_id"], wf[0]["workflow_type"], wf[0]["process"]) == \
            ("logged-1", handle.run_id, "ThreeSteps", "processor-0")
        steps = [r for r in records if r["logger"] == "processor.activity"]
        assert [(r["message"], r["activity_seq"], r["attempt"]) for r in steps] == \
            [("step a of 5", 1, 1), ("step b of 6", 2, 1), ("step c of 7", 3, 1)]
        assert {(r["workflow_id"], r["run_id"], r["activity_type"], r["process"]) for r in steps} == \
            {("logged-1", handle.run_id, "step", "worker-0")}
        [dead] = [r for r in records if "dead-lettered" in str(r["message"])]
        assert (dead["level"], dead["partition"], dead["workflow_id"], dead["process"]) == \
            ("WARNING", 1, "logged-junk", "processor-0")
        assert isinstance(dead["offset"], int)
        assert not any("%3|" in json.dumps(r) for r in records)
    finally:
        client.close()
        c.close()
