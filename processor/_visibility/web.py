"""The visibility service's HTTP routes: the JSON API (docs/visibility.md) on faust's web server.

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

import faust
from faust.web import Request, Response, View

from processor._visibility.service import Visibility
from processor.exceptions import ConfigError, ProcessorError, WorkflowNotFoundError

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
                    events = vis.history_json(workflow_id, q.get("run_id"))
                except WorkflowNotFoundError as exc:
                    return self.json({"error": str(exc)}, status=404)
                body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
                return self.text(body, content_type="application/x-ndjson")
            return answer(self, lambda: {"events": vis.history_json(workflow_id, q.get("run_id"))})

    @app.page("/api/workflows/{workflow_id}/{verb}")
    class Command(View):
        async def post(self, request: Request, workflow_id: str, verb: str) -> Response:
            if commands is None:
                return self.json({"error": "this visibility service sends no commands"}, status=503)
            try:
                body = await request.json() if request.can_read_body else {}  # type: ignore[truthy-function]
            except ValueError:
                return self.json({"error": "the body must be JSON"}, status=400)
            if not isinstance(body, dict):
                return self.json({"error": "the body must be a JSON object"}, status=400)
            run_id = body.get("run_id")
            if verb == "signal":
                name, args = body.get("name"), body.get("args") or []
                if not isinstance(name, str) or not name or not isinstance(args, list):
                    return self.json({"error": 'a signal needs {"name": "...", "args": [...]}'}, status=400)

                def send() -> None:
                    commands.signal(workflow_id, name, *args, run_id=run_id)
            elif verb in ("cancel", "terminate"):
                reason = str(body.get("reason") or f"{verb}ed from the visibility UI")

                def send() -> None:
                    getattr(commands, verb)(workflow_id, reason, run_id=run_id)
            else:
                return self.json({"error": f"unknown command {verb!r}: signal, cancel or terminate"}, status=404)
            try:
                await asyncio.to_thread(send)
            except WorkflowNotFoundError as exc:
                return self.json({"error": str(exc)}, status=404)
            except ProcessorError as exc:
                return self.json({"error": str(exc)}, status=409 if "refused" in str(exc) else 503)
            return self.json({"sent": verb, "workflow_id": workflow_id})

    @app.page("/api/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json(await lag(), headers=_JSON_HEADERS)

    del Workflows, Count, Workflow, History, Command, Status  # registered with the app


def _int(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"page_size must be a whole number; got {text!r}") from None
