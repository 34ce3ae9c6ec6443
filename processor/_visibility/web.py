"""The visibility service's HTTP routes on faust's web server: the JSON API (docs/visibility.md)
and the web UI's pages (pages.py) at / and /workflows/{id}.

    GET  /api/workflows?query=...&page_size=100&page_token=...   one page of runs, newest first
    GET  /api/count?query=...                                     how many, and how many per status
    GET  /api/workflows/{id}[?run_id=]                            one run: input, result or failure,
                                                                  pending activities and timers, runs
    GET  /api/workflows/{id}/history[?run_id=&format=jsonl]       its events, in order
    POST /api/workflows/{id}/signal      {"name": "...", "args": [...]}
    POST /api/workflows/{id}/cancel      {"reason": "..."}
    POST /api/workflows/{id}/terminate   {"reason": "..."}
    GET  /api/status                                              lag behind wf.events, counters

Errors are JSON `{"error": "..."}` with 400 (a bad query or body), 404 (no such workflow) or 503
(the command could not be sent).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import faust
from faust.web import Request, Response, View

from processor._visibility import pages
from processor._visibility.service import Visibility
from processor.exceptions import ConfigError, ProcessorError, WorkflowNotFoundError
from processor.replayer import history_to_json

__all__ = ["add_routes"]

_JSON_HEADERS = {"Cache-Control": "no-store"}


def add_routes(app: faust.App, vis: Visibility, lag: Callable[[], Awaitable[dict[str, Any]]],
               commands: Any) -> None:
    def answer(view: View, fn: Callable[[], Any]) -> Response:
        try:
            return view.json(fn(), headers=_JSON_HEADERS)
        except WorkflowNotFoundError as exc:
            return view.json({"error": str(exc)}, status=404)
        except ConfigError as exc:  # a bad query, page token or body
            return view.json({"error": str(exc)}, status=400)

    @app.page("/api/workflows")
    class Workflows(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            return answer(self, lambda: vis.list_workflows(q.get("query"), _int(q.get("page_size"), 100),
                                                           q.get("page_token")))

    @app.page("/api/count")
    class Count(View):
        async def get(self, request: Request) -> Response:
            return answer(self, lambda: vis.count_workflows(request.query.get("query")))

    @app.page("/api/workflows/{workflow_id}")
    class Workflow(View):
        async def get(self, request: Request, workflow_id: str) -> Response:
            return answer(self, lambda: vis.describe(workflow_id, request.query.get("run_id")))

    @app.page("/api/workflows/{workflow_id}/history")
    class History(View):
        async def get(self, request: Request, workflow_id: str) -> Response:
            q = request.query
            if q.get("format") == "jsonl":
                try:
                    events = vis.history_of(workflow_id, q.get("run_id"))
                except WorkflowNotFoundError as exc:
                    return self.json({"error": str(exc)}, status=404)
                # The form Replayer.replay_json reads (payload bytes in base64 `data`).
                return self.text(history_to_json(events), content_type="application/x-ndjson")
            return answer(self, lambda: {"events": vis.history_json(workflow_id, q.get("run_id"))})

    @app.page("/api/workflows/{workflow_id}/{verb}")
    class Command(View):
        async def post(self, request: Request, workflow_id: str, verb: str) -> Response:
            try:
                body = await request.json() if request.can_read_body else {}  # type: ignore[truthy-function]
            except ValueError:
                return self.json({"error": "the body must be JSON"}, status=400)
            status, answer_ = await send_command(commands, workflow_id, verb, body)
            return self.json(answer_, status=status)

    @app.page("/api/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json(await lag(), headers=_JSON_HEADERS)

    add_pages(app, vis, commands)
    del Workflows, Count, Workflow, History, Command, Status  # registered with the app


def add_pages(app: faust.App, vis: Visibility, commands: Any) -> None:
    """The web UI (pages.py): the list at /, one run at /workflows/{id}, and its buttons."""

    @app.page("/")
    class Index(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            query, token = (q.get("query") or "").strip(), q.get("page_token") or None
            counts = vis.count_workflows(None)
            try:
                page = vis.list_workflows(query or None, 100, token)
            except ConfigError as exc:
                return self.html(pages.list_page(query, None, counts, str(exc)), status=400)
            return self.html(pages.list_page(query, page, counts, page_token=token), headers=_JSON_HEADERS)

    @app.page("/workflows/{workflow_id}")
    class WorkflowPage(View):
        async def get(self, request: Request, workflow_id: str) -> Response:
            q = request.query
            try:
                view = vis.describe(workflow_id, q.get("run_id") or None)
                history = vis.history_json(workflow_id, view["run_id"])
            except WorkflowNotFoundError as exc:
                return self.html(pages.message_page("Not found", str(exc)), status=404)
            flash = f"{q['sent']} sent" if q.get("sent") in _VERBS else None
            return self.html(pages.workflow_page(view, history, flash, q.get("error")), headers=_JSON_HEADERS)

    @app.page("/workflows/{workflow_id}/{verb}")
    class Button(View):
        async def post(self, request: Request, workflow_id: str, verb: str) -> Response:
            form = dict(await request.post())
            body: dict[str, Any] = {k: form[k] for k in ("name", "reason") if form.get(k)}
            if form.get("run_id"):
                body["run_id"] = form["run_id"]
            if verb == "signal":
                try:
                    body["args"] = json.loads(form.get("args") or "[]")
                except ValueError:
                    body["args"] = None  # send_command explains
            status, answer_ = await send_command(commands, workflow_id, verb, body)
            target = pages.workflow_href(workflow_id, body.get("run_id"))
            extra = {"sent": verb} if status == 200 else {"error": answer_["error"]}
            sep = "&" if "?" in target else "?"
            return self.html("", status=303, headers={"Location": target + sep + urlencode(extra)})

    del Index, WorkflowPage, Button


_VERBS = ("signal", "cancel", "terminate")


async def send_command(commands: Any, workflow_id: str, verb: str, body: Any) -> tuple[int, dict[str, Any]]:
    """Send what a button or a POST asks: (HTTP status, the JSON answer)."""
    if commands is None:
        return 503, {"error": "this visibility service sends no commands"}
    if not isinstance(body, dict):
        return 400, {"error": "the body must be a JSON object"}
    run_id = body.get("run_id") or None
    if verb == "signal":
        name, args = body.get("name"), body.get("args") if body.get("args") is not None else []
        if not isinstance(name, str) or not name or not isinstance(args, list):
            return 400, {"error": 'a signal needs a name and a JSON list of args: {"name": "...", "args": [...]}'}

        def send() -> None:
            commands.signal(workflow_id, name, *args, run_id=run_id)
    elif verb in ("cancel", "terminate"):
        reason = str(body.get("reason") or f"{verb}ed from the visibility UI")

        def send() -> None:
            getattr(commands, verb)(workflow_id, reason, run_id=run_id)
    else:
        return 404, {"error": f"unknown command {verb!r}: signal, cancel or terminate"}
    try:
        await asyncio.to_thread(send)
    except WorkflowNotFoundError as exc:
        return 404, {"error": str(exc)}
    except ProcessorError as exc:
        return (409 if "refused" in str(exc) else 503), {"error": str(exc)}
    return 200, {"sent": verb, "workflow_id": workflow_id}


def _int(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"page_size must be a whole number; got {text!r}") from None
