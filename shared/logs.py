"""The correlation id of the unit of work in hand, audit events, and the logging set-up of each runtime.

Audit events (logger `exoprov.audit`, one per write) are logged at INFO and always shown: on stderr by the
CLI and the worker, in Application Insights on Azure, where host.json keeps traces out of sampling. Every
record carries the correlation id (`%(correlation_id)s`), stamped by CorrelationFilter rather than passed
into each message.

Operational events (logger `exoprov.event`, shared/events.py: one JSON line each for the alerts and the
workbook) pass at INFO on the Functions host, and on stderr only with -v.

`capture_logs` collects records as plain dicts, for tests (as structlog's `testing.capture_logs` does).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = [
    "EVENT_LOGGER",
    "CorrelationFilter",
    "audit",
    "capture_logs",
    "configure",
    "configure_host",
    "correlation_id",
    "correlation_scope",
]

AUDIT_LOGGER = "exoprov.audit"
EVENT_LOGGER = "exoprov.event"  # shared/events.py
FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(correlation_id)s]: %(message)s"
_audit = logging.getLogger(AUDIT_LOGGER)
_correlation: contextvars.ContextVar[str] = contextvars.ContextVar("exoprov_correlation", default="-")
# On the Functions host: how to tie the current thread to the invocation (set by the adapter, carried into the
# core's threads with their copied context, and called for each record before the host's handler sees it).
_thread_binder: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "exoprov_thread_binder", default=None
)


def correlation_id() -> str:
    """The id of the sweep run or provisioning request this thread is working on."""
    return _correlation.get()


@contextlib.contextmanager
def correlation_scope(value: str | None = None) -> Iterator[str]:
    """Bind a correlation id for the duration of a unit of work (a new one when none is given)."""
    value = value or uuid.uuid4().hex[:12]
    token = _correlation.set(value)
    try:
        yield value
    finally:
        _correlation.reset(token)


def audit(
    action: str, target: str, before: Any, after: Any, *, request_id: str | None = None, noop: bool = False
) -> None:
    """One structured event per write: what changed on whom, before and after, for which request or run.

    The event rides on the log record as `record.audit`, so log pipelines (and tests) read it as data.
    """
    event = {
        "action": action,
        "target": target,
        "before": before,
        "after": after,
        "noop": noop,
        "requestId": request_id,
        "correlationId": correlation_id(),
    }
    _audit.info(
        "write %s on %s%s: %s -> %s%s",
        action,
        target,
        f" (request {request_id})" if request_id else "",
        before,
        after,
        " (no change)" if noop else "",
        extra={"audit": event},
    )


class CorrelationFilter(logging.Filter):
    """Stamps the correlation id of the unit of work on every record that passes a handler.

    With `prefix`, exoprov's own messages also start with `[id]`: the Functions host forwards the message
    text only, not the record's attributes. Event lines are left as they are: they carry the id in their
    JSON, and the queries of the alerts find them by how they start.
    """

    def __init__(self, prefix: bool = False) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        bind = _thread_binder.get()
        if bind is not None:
            bind()
        value = getattr(record, "correlation_id", None) or correlation_id()
        record.correlation_id = value
        if (
            self.prefix
            and value != "-"
            and record.name.startswith("exoprov")
            and record.name != EVENT_LOGGER
            and not hasattr(record, "_prefixed")
        ):
            record.msg = f"[{value.replace('%', '%%')}] {record.msg}"
            record._prefixed = True
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time, not the one it was created with."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(verbose: bool = False) -> None:
    """Log to stderr with timestamps and correlation ids; the CLI and the worker call this."""
    logger = logging.getLogger("exoprov")
    _levels(verbose)
    # The Azure SDKs log every retry of theirs; exoprov says once, in one line, what failed and what it does.
    logging.getLogger("azure").setLevel(logging.INFO if verbose else logging.ERROR)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.addFilter(CorrelationFilter())
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)


def configure_host(bind_thread: Callable[[], None] | None = None) -> None:
    """On the Functions host: warnings, audit and operational events from exoprov, each message led by its
    correlation id (event lines excepted). `bind_thread` ties a thread of the core to the invocation."""
    if bind_thread is not None:
        _thread_binder.set(bind_thread)
    _levels(verbose=False)
    logging.getLogger(EVENT_LOGGER).setLevel(logging.INFO)  # what the alerts and the workbook read
    logging.getLogger("azure").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, CorrelationFilter) for f in handler.filters):
            handler.addFilter(CorrelationFilter(prefix=True))


def _levels(verbose: bool) -> None:
    logging.getLogger("exoprov").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)  # a record of every write, -v or not
    logging.getLogger(EVENT_LOGGER).setLevel(logging.NOTSET)  # as "exoprov": shown with -v (the host raises it)


# What every record has; anything else was set through `extra=` (exoprov's `audit`). The filter's id is
# already in the dict, and `message` and `asctime` are only left behind by a formatter.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "correlation_id",
    "message",
    "asctime",
}
_TRACEBACKS = logging.Formatter()


class _Capture(logging.Handler):
    """Appends each record it handles to a list, as a plain dict."""

    def __init__(self, into: list[dict[str, Any]], level: int) -> None:
        super().__init__(level)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        entry: dict[str, Any] = {
            "name": record.name,
            "level": record.levelname,
            "message": record.getMessage(),
            "correlation_id": vars(record)["correlation_id"],  # stamped by the CorrelationFilter on this handler
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")})
        if record.exc_info and record.exc_info[0] is not None:  # exc_info=True outside an except: no traceback
            entry["exception"] = _TRACEBACKS.formatException(record.exc_info)
        self.into.append(entry)


@contextlib.contextmanager
def capture_logs(logger: str = "exoprov", level: int = logging.INFO) -> Iterator[list[dict[str, Any]]]:
    """Collect what `logger` and its children log at `level` and above, from any thread, as dicts: name, level,
    message, correlation_id, the record's `extra=` attributes and, if it has one, the exception's traceback.

    On exit the logger's level and handlers are as they were; `logger=""` captures every logger, through the root.
    """
    captured: list[dict[str, Any]] = []
    handler = _Capture(captured, level)
    handler.addFilter(CorrelationFilter())
    target = logging.getLogger(logger)
    previous = target.level
    target.addHandler(handler)
    target.setLevel(level)
    try:
        yield captured
    finally:
        target.removeHandler(handler)
        target.setLevel(previous)
