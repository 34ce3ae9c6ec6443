"""OpenTelemetry tracing: one trace per workflow run, from the client's start to its completion.

Spans (names as Temporal's SDKs name theirs):
    StartWorkflow:<type>     the client, sending the start (kind producer): the trace's root
    RunWorkflow:<type>       the processor, each workflow task (an activation of the code, not a replay)
    StartActivity:<type>     the processor, each activity attempt dispatched to a task topic
    RunActivity:<type>       the worker, each attempt it runs (status error when it fails)
    CompleteWorkflow:<type>  the processor, the run closing (its status an attribute)

They are linked by a W3C `traceparent` (https://www.w3.org/TR/trace-context/): the client puts it
on the StartWorkflow command as a Kafka header; the processor records it in the run's
WorkflowStarted event (so a restarted processor, a continue-as-new run and a child workflow carry
it on), puts a StartActivity span's on each task record, and the run's on the completion record.
Every span has workflow_id and run_id attributes (activity spans also the seq and attempt).

Enabled when an OpenTelemetry SDK tracer provider is installed: `processor run` and its children
install one from the standard OTEL_* environment (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_TRACES_EXPORTER=otlp|console; the extra `durable-processor[otel]`); an application using
`Client` installs its own as usual. With none, every call site pays one dict lookup
(`tracer()` finds no opentelemetry module loaded, or only the API's proxy) and nothing else.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("processor.tracing")

HEADER = "traceparent"
_cached: tuple[object, Any] | None = None  # (provider, its tracer)
_UNKNOWN = object()
_given: Any = None  # use(provider): this process's provider instead of the global one


def use(provider: Any | None) -> None:
    """Trace with `provider` (an SDK TracerProvider) instead of OpenTelemetry's global one; None:
    back to the global one. For tests, and for processes that keep several providers."""
    global _given, _cached
    _given, _cached = provider, None


def tracer() -> Any | None:
    """The tracer of the installed SDK provider, or None (no cost beyond this lookup)."""
    global _cached
    if _given is not None:
        if _cached is None or _cached[0] is not _given:
            _cached = (_given, _given.get_tracer("durable-processor"))
        return _cached[1]
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    # The API's global, read directly: get_tracer_provider() reads os.environ on every call while
    # none is set (~0.9 us); None here means none is set.
    provider: Any = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return None
    if provider is _UNKNOWN:  # an API version without the global: ask it
        provider = trace.get_tracer_provider()
    if _cached is not None and _cached[0] is provider:
        return _cached[1]
    off = type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider")
    got = None if off else provider.get_tracer("durable-processor")
    _cached = (provider, got)  # the proxy too: the next call is an identity check
    return got


def start(t: Any, name: str, parent: str | None, attributes: Mapping[str, Any], kind: str = "INTERNAL") -> Any:
    """A started span, child of the W3C `parent` traceparent when one is given."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({HEADER: parent}) if parent else None
    return t.start_span(name, context=context, kind=getattr(trace.SpanKind, kind),
                        attributes={k: v for k, v in attributes.items() if v is not None})


def traceparent(span: Any) -> str | None:
    """The W3C traceparent of `span`, to carry to the next hop."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(HEADER)


def header(span: Any) -> tuple[str, bytes]:
    """The `traceparent` record header naming `span`."""
    return HEADER, (traceparent(span) or "").encode()


def failed(span: Any, error: BaseException | str) -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, BaseException):
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


def header_value(headers: list[tuple[str, bytes]] | None) -> str | None:
    for name, value in headers or ():
        if name == HEADER and value:
            return value.decode(errors="replace")
    return None


def setup_from_env(service: str) -> bool:
    """Install an SDK tracer provider exporting as the OTEL_* environment says (OTLP over HTTP,
    or the console); False, and nothing installed, when it asks for none."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter_name in ("", "none") and not (endpoint and exporter_name != "none"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        from processor.exceptions import ConfigError

        raise ConfigError("tracing is configured (OTEL_*) but OpenTelemetry is not installed: "
                          "pip install 'durable-processor[otel]'") from None
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            from processor.exceptions import ConfigError

            raise ConfigError("OTLP export needs opentelemetry-exporter-otlp-proto-http: "
                              "pip install 'durable-processor[otel]'") from None
        exporter = OTLPSpanExporter()
    name = os.environ.get("OTEL_SERVICE_NAME") or f"durable-processor-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting %s spans as %s", name, exporter_name or "otlp")
    return True


def shutdown() -> None:
    """Flush and stop the installed provider (a process exiting), if it is ours to stop."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    stop = getattr(trace.get_tracer_provider(), "shutdown", None)
    if stop is not None:
        stop()
