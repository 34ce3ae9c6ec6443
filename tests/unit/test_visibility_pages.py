"""The web UI's pages (pure HTML from the API's answers), over the projection of records the real
engine wrote in the test kit: what each page shows, and that nothing from a workflow is unescaped."""

from __future__ import annotations

import asyncio
import html.parser
from typing import Any

import pytest

from processor import workflow
from processor._codec import default_codec
from processor._visibility import pages
from processor._visibility.service import Visibility
from processor.exceptions import ApplicationError
from processor.testing import WorkflowEnvironment
from tests.unit.test_visibility_service import project

EVIL = "<script>alert(1)</script>"


@workflow.defn
class Order:
    @workflow.run
    async def run(self, outcome: str) -> str:
        workflow.upsert_search_attributes({"Note": EVIL})
        await asyncio.sleep(30)
        if outcome == "fail":
            raise ApplicationError(f"declined {EVIL}", type="Declined", non_retryable=True)
        if outcome == "wait":
            await asyncio.sleep(3600)
        return f"shipped {EVIL}"


@pytest.fixture
def vis() -> Any:
    with WorkflowEnvironment(workflows=[Order], partitions=2) as env:
        for wid, outcome in (("ok", "ok"), ("bad", "fail"), (EVIL, "wait")):
            env.start_workflow(Order.run, outcome, id=wid, memo={"m": EVIL})
        env.sleep(60)
        v = Visibility(default_codec(), {}, {}, {})
        project(env, v)
        yield v


class _Parsed(html.parser.HTMLParser):
    """The document's script bodies and every text node (to prove a value is text, not markup)."""

    def __init__(self, doc: str) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(doc)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def test_the_list_shows_counts_rows_and_escapes_everything(vis: Visibility) -> None:
    doc = pages.list_page("", vis.list_workflows(None), vis.count_workflows(None))
    parsed = _Parsed(doc)
    assert len(parsed.scripts) == 1 and "alert" not in parsed.scripts[0], "only our own counts script"
    assert EVIL not in doc and "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert doc.count("<tr data-workflow-id=") == 3
    assert "data-status=Running><span class='status Running' data-role=status>Running</span><span class=n>1<" in doc
    assert "3 matching" in "".join(parsed.text)
    assert "/workflows/%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in doc, "ids are quoted in links"


def test_a_bad_query_is_shown_as_an_error_not_a_table() -> None:
    doc = pages.list_page("Amount >", None, {"count": 0, "by_status": {}}, "list query: expected a value")
    assert "data-role=error>list query: expected a value<" in doc and "<table" not in doc
    assert "value='Amount &gt;'" in doc, "the query stays in its box"


def test_a_workflow_page_shows_result_failure_with_stack_and_timeline(vis: Visibility) -> None:
    ok = pages.workflow_page(vis.describe("ok"), vis.history_json("ok"))
    assert "data-role=result" in ok and "shipped &lt;script&gt;" in ok and EVIL not in ok
    assert "id=cancel" not in ok, "no buttons on a closed run"
    assert [t for t in ("WorkflowStarted", "TimerStarted", "TimerFired", "WorkflowCompleted") if f"<b>{t}</b>" in ok]\
        == ["WorkflowStarted", "TimerStarted", "TimerFired", "WorkflowCompleted"]
    bad = pages.workflow_page(vis.describe("bad"), vis.history_json("bad"))
    assert "<b>Declined</b>: declined &lt;script&gt;" in bad and "data-role=stack>" in bad and " (non-retryable)" in bad


def test_a_running_workflow_page_has_its_timer_and_buttons(vis: Visibility) -> None:
    view = vis.describe(EVIL)
    doc = pages.workflow_page(view, vis.history_json(EVIL), flash="cancel sent")
    assert EVIL not in doc
    assert "<table id=timers>" in doc and "id=cancel>" in doc and "id=terminate>" in doc and "id=signal>" in doc
    assert f"value='{view['run_id']}'" in doc, "the buttons name the run they act on"
    assert "data-role=flash>cancel sent<" in doc


def test_a_held_workflow_shows_the_reason() -> None:
    view = {"workflow_id": "w", "run_id": "r", "workflow_type": "T", "task_queue": "q", "status": "Running",
            "start_ms": 0, "history_length": 3, "held": "nondeterminism: expected TimerStarted at seq 2"}
    doc = pages.workflow_page(view, [])
    assert "data-role=held><b>Held:</b> nondeterminism: expected TimerStarted at seq 2<" in doc
    assert "<span class='status held'" in doc


def test_an_encrypted_payload_without_its_key_shows_the_key_id_only() -> None:
    from processor._visibility import pages

    shown = {"encoding": "binary/encrypted", "base64": "AQJrMQ==", "summary": "<encrypted with key 'k1', 60 bytes>",
             "unopened": "the payload is encrypted with key id 'k1' and this process has no payload keys"}
    html = pages._payload(shown)
    assert "&lt;encrypted with key &#x27;k1&#x27;, 60 bytes&gt;" in html and "AQJrMQ" not in html
    assert 'title="the payload is encrypted' in html
