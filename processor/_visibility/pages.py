"""The web UI's pages: plain server-rendered HTML from what the JSON API answers (service.py).

Pure: each function takes the API's dicts and returns one HTML document, so the pages are unit
tested without a server and show exactly what `/api/...` shows. Every value from a workflow is
escaped. No CDN and no bundle: one inline stylesheet, and one small inline script on the list
page that refreshes the counts by status from `/api/count` every two seconds (the page works
without it). The buttons are HTML forms POSTing to `/workflows/{id}/{verb}`; the server sends the
command and redirects back (web.py).
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["STATUSES", "list_page", "message_page", "workflow_href", "workflow_page"]

STATUSES = ("Running", "Completed", "Failed", "Canceled", "Terminated", "TimedOut", "ContinuedAsNew")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1c2330;background:#f6f7f9}
header{background:#1c2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 24px;max-width:1400px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef0f3;font-weight:600}
a{color:#1f5fbf}
pre{background:#fff;border:1px solid #e3e6ea;padding:8px;overflow:auto;max-height:420px;margin:4px 0}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e3e6ea}
.Running{background:#d9ecff;color:#0b4a8b}.Completed{background:#d7f5dd;color:#125c22}
.Failed,.TimedOut{background:#fde0df;color:#8b1510}.Canceled,.Terminated{background:#eee4d0;color:#6b4a06}
.ContinuedAsNew{background:#ece0fb;color:#4b1f8b}.held{background:#ffe8b3;color:#6b4a06}
.counts{display:flex;gap:10px;flex-wrap:wrap;margin:8px 0 14px}
.counts a{text-decoration:none}.counts .n{font-weight:700;margin-left:4px}
form.query{display:flex;gap:8px;margin-bottom:8px}form.query input{flex:1;padding:6px;font:13px monospace}
.error{background:#fde0df;color:#8b1510;padding:8px 12px;border-radius:4px;margin:8px 0}
.flash{background:#d7f5dd;color:#125c22;padding:8px 12px;border-radius:4px;margin:8px 0}
.grid{display:grid;grid-template-columns:180px 1fr;gap:4px 16px;background:#fff;padding:12px;border:1px solid #e3e6ea}
.grid dt{color:#5a6372}.grid dd{margin:0}
section{margin:18px 0}h2{font-size:16px;margin:0 0 6px}
.actions{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-end}
.actions form{background:#fff;border:1px solid #e3e6ea;padding:8px;display:flex;gap:6px;align-items:center}
button{padding:5px 12px;cursor:pointer}.muted{color:#5a6372}.nowrap{white-space:nowrap}
"""

_COUNTS_JS = """
(function(){
  var box=document.getElementById('counts');if(!box||!window.fetch)return;
  function refresh(){
    fetch('/api/count',{cache:'no-store'}).then(function(r){return r.json()}).then(function(c){
      var by=c.by_status||{};
      box.querySelectorAll('[data-status]').forEach(function(el){
        var s=el.getAttribute('data-status');
        el.querySelector('.n').textContent=(s==='All'?c.count:(by[s]||0));
      });
    }).catch(function(){});
  }
  setInterval(refresh,2000);
})();
"""


def _page(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)} - durable-processor</title><style>{_CSS}</style></head><body>"
            "<header><a href='/'>durable-processor</a><span class=muted>workflows</span></header>"
            f"<main>{body}</main>{tail}</body></html>")


def _badge(status: str, held: Any = None) -> str:
    out = f"<span class='status {escape(status)}' data-role=status>{escape(status)}</span>"
    if held:
        out += " <span class='status held' title='held'>Held</span>"
    return out


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d} UTC"


def _duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def workflow_href(workflow_id: str, run_id: str | None = None) -> str:
    href = "/workflows/" + quote(workflow_id, safe="")
    return href + ("?" + urlencode({"run_id": run_id}) if run_id else "")


def _json(value: Any) -> str:
    return escape(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _payload(payload: dict[str, Any] | None) -> str:
    """A payload as the API gives it: its JSON value, or its encoding and base64 bytes."""
    if payload is None:
        return "<span class=muted>none</span>"
    if "unopened" in payload:  # encrypted, and this process does not hold the key
        return f"<pre title=\"{escape(payload['unopened'])}\">{escape(payload['summary'])}</pre>"
    if "json" in payload:
        return f"<pre>{_json(payload['json'])}</pre>"
    return f"<pre>{escape(payload.get('encoding', '?'))}: {escape(str(payload.get('base64', '')))}</pre>"


def _failure(failure: dict[str, Any] | None) -> str:
    """A failure with its full stack trace and its cause chain."""
    parts, depth = [], 0
    while failure is not None and depth < 20:
        label = "caused by " if depth else ""
        retry = " (non-retryable)" if failure.get("non_retryable") else ""
        parts.append(f"<div data-role=failure><b>{label}{escape(str(failure.get('type')))}</b>: "
                     f"{escape(str(failure.get('message')))}{retry}"
                     + (f"<pre data-role=stack>{escape(str(failure['stack_trace']))}</pre>"
                        if failure.get("stack_trace") else "") + "</div>")
        failure, depth = failure.get("cause"), depth + 1
    return "".join(parts)


def list_page(query: str, page: dict[str, Any] | None, counts: dict[str, Any], error: str | None = None,
              page_token: str | None = None) -> str:
    """The workflow list: a query box, the counts by status over every workflow (each a link
    that filters by it, refreshed live), and one page of the runs the query matches."""
    by_status = counts.get("by_status", {})
    chips = ["<a href='/' data-status=All><span class=status>All</span>"
             f"<span class=n>{counts.get('count', 0)}</span></a>"]
    for status in STATUSES:
        href = "/?" + urlencode({"query": f"ExecutionStatus = '{status}'"})
        chips.append(f"<a href='{escape(href)}' data-status={status}>{_badge(status)}"
                     f"<span class=n>{by_status.get(status, 0)}</span></a>")
    body = [f"<div class=counts id=counts>{''.join(chips)}</div>",
            "<form class=query method=get action='/'>"
            f"<input name=query id=query value='{escape(query)}' placeholder=\"WorkflowType = 'Order' AND "
            "ExecutionStatus = 'Running' AND CustomerId = 'c1'\"><button type=submit>Search</button></form>"]
    if error:
        body.append(f"<div class=error data-role=error>{escape(error)}</div>")
    if page is not None:
        rows = []
        for w in page["workflows"]:
            attrs = ", ".join(f"{escape(k)}={escape(json.dumps(v, default=str))}"
                              for k, v in w.get("search_attributes", {}).items())
            rows.append(
                f"<tr data-workflow-id='{escape(w['workflow_id'])}'>"
                f"<td>{_badge(w['status'], w.get('held'))}</td>"
                f"<td><a href='{escape(workflow_href(w['workflow_id'], w['run_id']))}'>"
                f"{escape(w['workflow_id'])}</a></td>"
                f"<td>{escape(w['workflow_type'])}</td><td>{_time(w['start_ms'])}</td>"
                f"<td>{_time(w.get('close_ms'))}</td><td>{w['history_length']}</td>"
                f"<td class=muted>{attrs}</td></tr>")
        shown = f"{len(rows)} of {page['count']}" if page["count"] != len(rows) else str(page["count"])
        body.append(f"<p class=muted data-role=matches>{shown} matching</p>")
        body.append("<table id=workflows><thead><tr><th>Status</th><th>Workflow ID</th><th>Type</th><th>Started</th>"
                    "<th>Closed</th><th>Events</th><th>Search attributes</th></tr></thead><tbody>"
                    + "".join(rows) + "</tbody></table>")
        if page.get("next_page_token"):
            href = "/?" + urlencode({"query": query, "page_token": page["next_page_token"]})
            body.append(f"<p><a href='{escape(href)}' id=next>next page</a></p>")
        if page_token:
            body.append("<p><a href='/?" + escape(urlencode({"query": query})) + "'>first page</a></p>")
    return _page("Workflows", "".join(body), _COUNTS_JS)


def workflow_page(w: dict[str, Any], history: list[dict[str, Any]], flash: str | None = None,
                  error: str | None = None) -> str:
    """One run: its summary, input, result or failure (with the stack trace), why it is held,
    pending activities and timers, children, its runs, the buttons, and its history timeline."""
    wid, run = w["workflow_id"], w["run_id"]
    body = [f"<h1 style='font-size:20px'>{escape(wid)} {_badge(w['status'], w.get('held'))}</h1>"]
    if flash:
        body.append(f"<div class=flash data-role=flash>{escape(flash)}</div>")
    if error:
        body.append(f"<div class=error data-role=error>{escape(error)}</div>")
    if w.get("held"):
        body.append(f"<div class=error data-role=held><b>Held:</b> {escape(str(w['held']))}</div>")
    facts = [("Type", escape(w["workflow_type"])), ("Run", escape(run)), ("Task queue", escape(w["task_queue"])),
             ("Started", _time(w["start_ms"])), ("Closed", _time(w.get("close_ms"))),
             ("Duration", _duration(w.get("duration_ms"))), ("Events", str(w["history_length"])),
             ("Signals received", str(w.get("signals", 0)))]
    if w.get("cancel_requested") and w["status"] == "Running":
        facts.append(("Cancel", "requested"))
    if w.get("close_reason"):
        facts.append(("Reason", escape(str(w["close_reason"]))))
    if w.get("parent_workflow_id"):
        facts.append(("Parent", f"<a href='{escape(workflow_href(w['parent_workflow_id'], w.get('parent_run_id')))}'>"
                                f"{escape(w['parent_workflow_id'])}</a>"))
    for label, key in (("Continued from", "continued_from_run_id"), ("Continued as", "new_run_id")):
        if w.get(key):
            facts.append((label, f"<a href='{escape(workflow_href(wid, w[key]))}'>{escape(w[key])}</a>"))
    body.append("<dl class=grid>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>")
    if w.get("search_attributes"):
        body.append(f"<section><h2>Search attributes</h2><pre data-role=search-attributes>"
                    f"{_json(w['search_attributes'])}</pre></section>")
    if w.get("memo"):
        body.append(f"<section><h2>Memo</h2><pre>{_json(w['memo'])}</pre></section>")
    body.append("<section><h2>Input</h2>" + ("".join(_payload(p) for p in w.get("input") or [])
                                               or "<span class=muted>no arguments</span>") + "</section>")
    if w.get("result") is not None:
        body.append(f"<section data-role=result><h2>Result</h2>{_payload(w['result'])}</section>")
    if w.get("failure") is not None:
        body.append(f"<section><h2>Failure</h2>{_failure(w['failure'])}</section>")
    body.append(_pending(w))
    if w["status"] == "Running":
        body.append(_actions(wid, run))
    if len(w.get("runs") or []) > 1:
        items = "".join(f"<li><a href='{escape(workflow_href(wid, r['run_id']))}'>{escape(r['run_id'])}</a> "
                        f"{_badge(r['status'])} {_time(r['start_ms'])}</li>" for r in w["runs"])
        body.append(f"<section><h2>Runs</h2><ol>{items}</ol></section>")
    body.append(_timeline(history, w["start_ms"]))
    jsonl = f"/api/workflows/{quote(wid, safe='')}/history?" + urlencode({"run_id": run, "format": "jsonl"})
    body.append(f"<p class=muted>History as JSON lines (what Replayer reads): <a href='{escape(jsonl)}'>"
                f"{escape(jsonl)}</a></p>")
    return _page(wid, "".join(body))


def _pending(w: dict[str, Any]) -> str:
    out = []
    activities = w.get("activities") or {}
    if activities:
        rows = "".join(
            f"<tr><td>{escape(seq)}</td><td>{escape(a['activity_type'])}</td><td>{escape(a['task_queue'])}</td>"
            f"<td>{a['attempt']}</td><td>{_time(a.get('next_retry_ms'))}</td>"
            f"<td>{_failure(a.get('last_failure')) if a.get('last_failure') else ''}</td></tr>"
            for seq, a in sorted(activities.items(), key=lambda kv: int(kv[0])))
        out.append("<section><h2>Pending activities</h2><table id=activities><thead><tr><th>Seq</th><th>Type</th>"
                   "<th>Task queue</th><th>Attempt</th><th>Next retry</th><th>Last failure</th></tr></thead>"
                   f"<tbody>{rows}</tbody></table></section>")
    timers = w.get("timers") or {}
    if timers:
        rows = "".join(f"<tr><td>{escape(seq)}</td><td>{_time(due)}</td></tr>"
                       for seq, due in sorted(timers.items(), key=lambda kv: int(kv[0])))
        out.append("<section><h2>Pending timers</h2><table id=timers><thead><tr><th>Seq</th><th>Due</th></tr></thead>"
                   f"<tbody>{rows}</tbody></table></section>")
    children = w.get("children") or {}
    if children:
        items = "".join(f"<li><a href='{escape(workflow_href(child))}'>{escape(child)}</a></li>"
                        for _, child in sorted(children.items(), key=lambda kv: int(kv[0])))
        out.append(f"<section><h2>Open child workflows</h2><ul>{items}</ul></section>")
    return "".join(out)


def _actions(wid: str, run: str) -> str:
    base = escape("/workflows/" + quote(wid, safe=""))
    hidden = f"<input type=hidden name=run_id value='{escape(run)}'>"
    return ("<section><h2>Actions</h2><div class=actions>"
            f"<form method=post action='{base}/signal' id=signal-form>{hidden}"
            "<label>Signal <input name=name required placeholder=name size=12></label>"
            "<label>args (JSON list) <input name=args value='[]' size=20></label>"
            "<button type=submit id=signal>Send signal</button></form>"
            f"<form method=post action='{base}/cancel' id=cancel-form>{hidden}"
            "<input name=reason placeholder='reason' size=16><button type=submit id=cancel>Cancel</button></form>"
            f"<form method=post action='{base}/terminate' id=terminate-form>{hidden}"
            "<input name=reason placeholder='reason' size=16><button type=submit id=terminate>Terminate</button></form>"
            "</div></section>")


_NOT_DETAIL = frozenset({"type", "seq", "time_ms", "workflow_id", "run_id"})


def _timeline(history: list[dict[str, Any]], start_ms: int) -> str:
    rows = []
    for e in history:
        details = {k: v for k, v in e.items() if k not in _NOT_DETAIL and v not in (None, {}, [])}
        text = json.dumps(details, ensure_ascii=False, default=str)
        cell = escape(text) if len(text) <= 240 else (
            f"<details><summary>{escape(text[:200])}...</summary><pre>{_json(details)}</pre></details>")
        rows.append(f"<tr><td>{e['seq']}</td><td class=nowrap>+{_duration(e['time_ms'] - start_ms)}</td>"
                    f"<td><b>{escape(e['type'])}</b></td><td class=muted>{cell}</td></tr>")
    return ("<section><h2>History</h2><table id=history><thead><tr><th>#</th><th>At</th><th>Event</th>"
            f"<th>Details</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


def message_page(title: str, message: str) -> str:
    return _page(title, f"<h1 style='font-size:20px'>{escape(title)}</h1><div class=error data-role=error>"
                        f"{escape(message)}</div><p><a href='/'>all workflows</a></p>")
