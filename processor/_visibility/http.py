"""A client of the visibility service's JSON API (web.py), for Client.list_workflows and the CLI.

Standard library only: the service is one HTTP request away, and a client that lists workflows
should not need faust installed.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from processor.exceptions import ConfigError, ProcessorError, WorkflowNotFoundError

__all__ = ["DEFAULT_URL", "VisibilityClient", "VisibilityUnavailableError", "visibility_url"]

DEFAULT_PORT = 8233
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


class VisibilityUnavailableError(ProcessorError):
    """No visibility service answers at the URL (start one with `processor ui`)."""


def visibility_url(explicit: str | None = None) -> str:
    """--visibility-url / the argument, else DP_VISIBILITY_URL, else the local default."""
    url = (explicit or os.environ.get("DP_VISIBILITY_URL") or DEFAULT_URL).rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"visibility URL {url!r} must start with http:// or https://")
    return url


class VisibilityClient:
    def __init__(self, url: str | None = None, timeout: float = 30.0) -> None:
        self.url = visibility_url(url)
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        return self._call(urllib.request.Request(self.url + path + (f"?{query}" if query else "")))  # noqa: S310

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call(urllib.request.Request(  # noqa: S310 - visibility_url() accepts http(s) only
            self.url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"}))

    def _call(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error") or str(exc)
            except ValueError:
                message = str(exc)
            if exc.code == 404:
                raise WorkflowNotFoundError(message) from None
            if exc.code == 400:
                raise ConfigError(message) from None
            raise ProcessorError(f"visibility service at {self.url}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise VisibilityUnavailableError(
                f"no visibility service answers at {self.url} ({reason}): start one with `processor ui`, or point "
                "DP_VISIBILITY_URL / --visibility-url at it") from None

    def page(self, query: str | None = None, page_size: int = 100, page_token: str | None = None) -> dict[str, Any]:
        return dict(self._get("/api/workflows", {"query": query, "page_size": page_size, "page_token": page_token}))

    def rows(self, query: str | None = None, page_size: int = 100,
             limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every run the query matches (up to `limit`), page by page."""
        token: str | None = None
        given = 0
        while True:
            page = self.page(query, page_size, token)
            for row in page["workflows"]:
                if limit is not None and given >= limit:
                    return
                given += 1
                yield row
            token = page.get("next_page_token")
            if not token:
                return

    def count(self, query: str | None = None) -> dict[str, Any]:
        return dict(self._get("/api/count", {"query": query}))

    def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        return dict(self._get(f"/api/workflows/{_id(workflow_id)}", {"run_id": run_id}))

    def history(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        return list(self._get(f"/api/workflows/{_id(workflow_id)}/history", {"run_id": run_id})["events"])

    def status(self) -> dict[str, Any]:
        return dict(self._get("/api/status"))

    def command(self, workflow_id: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._post(f"/api/workflows/{_id(workflow_id)}/{verb}", body))


def _id(workflow_id: str) -> str:
    return urllib.parse.quote(workflow_id, safe="")
