"""Operational events: what the alerts and the workbook of the deployment read (infra/app/monitoring.bicep).

Each event is ONE log line, `exoprov.event {json}`, logged at INFO on the logger `exoprov.event`. On Azure
the line lands in Application Insights' `traces` table as the row's `message`, and the KQL reads it with

    traces | where message startswith "exoprov.event " | extend e = parse_json(substring(message, 14))

Why a line and not custom dimensions. On the Functions host a Python record reaches Application Insights
as its formatted text only: the worker sends the host an RpcLog of level, message, category and invocation
id (azure-functions-python-worker, `Dispatcher.on_logging`), so `logging`'s `extra=` fields are dropped, and
the host adds its own dimensions (Category `Function.<name>.User`, LogLevel, InvocationId, HostInstanceId,
ProcessId; azure-functions-python-worker#1327, #1681). The OpenTelemetry route (azure-monitor-opentelemetry,
PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY) would keep them, at the price of 27 more packages and about
0.4 s and 28 MB more at every cold start (measured on the development machine: importing and configuring
the distro takes 0.6 s and 57 MB, importing azure.functions 0.2 s and 28 MB), and of logs sent twice unless
the host's own trace collection is turned off (#1342, #1681). A JSON payload in the message is as
queryable (`parse_json`), costs nothing at start, and reads the same on stderr. So the fields live in the
message; `EVENTS` below is their one definition, and tests/test_events.py checks that every field a query
of the templates reads is one of them.

The host keeps a worker's log line only when its invocation id is one the host is executing
(azure-functions-host, `GrpcWorkerChannel.Log`). The events are emitted on the function's own thread, and
the core's other threads tie themselves to the invocation (functions/invocation.py), so a `journal_error`
from the sweep's journal thread arrives too; a journal failure during a run therefore shows twice, as a
`journal_error` and as the `run` event's `journalError`.

Nothing secret goes in: ids, counts, codes and the first line of a storage error, never a token or a UPN.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from shared.logs import EVENT_LOGGER, correlation_id

__all__ = ["COMMON_FIELDS", "EVENTS", "PREFIX", "Event", "Field", "emit"]

PREFIX = "exoprov.event "
VERSION = 1

Kind = Literal["string", "long", "real", "bool"]  # the KQL conversion a query applies (tostring, toint, ...)


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str


@dataclass(frozen=True)
class Event:
    name: str
    doc: str
    fields: tuple[Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


# Every event carries these, first.
COMMON_FIELDS = (
    Field("event", "string", "the event's name, a key of EVENTS"),
    Field("v", "long", "the payload's version"),
    Field("correlationId", "string", "the run id or requestId the line belongs to (as in every other log line)"),
)

EVENTS: dict[str, Event] = {
    e.name: e
    for e in (
        Event(
            "run",
            "a sweep or undo run ended, with its report's figures; or it raised, with `error`",
            (
                Field("kind", "string", "sweep or undo"),
                Field("runId", "string", "the run id (the journal's, the report's)"),
                Field("mode", "string", "report or apply"),
                Field("candidates", "long", "mailboxes the run would change; null when it raised"),
                Field("changed", "long", "writes that took effect"),
                Field("failed", "long", "writes that failed"),
                Field("unknown", "long", "writes whose outcome could not be read back"),
                Field("brakeEngaged", "bool", "more candidates than ENFORCE_MAX_CHANGES: nothing was changed"),
                Field("complete", "bool", "false when the time budget or a journal failure stopped it"),
                Field("durationSeconds", "real", "the report's duration; the time until it raised otherwise"),
                Field("journalError", "string", "why the journal could not be written, when it could not"),
                Field("error", "string", "the exception that ended the run (type: first line), or null"),
            ),
        ),
        Event(
            "result",
            "a provisioning result was sent to provision-results (once per request)",
            (
                Field("requestId", "string", "the HR system's requestId"),
                Field("status", "string", "the result's status"),
                Field("code", "string", "error.code of a failed result, null otherwise"),
                Field("mailboxType", "string", "the mailbox type asked for, when known"),
                Field("seconds", "real", "time since the request was accepted, when known"),
            ),
        ),
        Event(
            "journal_error",
            "the journal could not be read or written (a write that fails is not made)",
            (
                Field("operation", "string", "create, append or close (writes); read or list"),
                Field("write", "bool", "whether the operation writes"),
                Field("error", "string", "the storage error's first line"),
            ),
        ),
        Event(
            "readiness",
            "a readiness report was written to exoprov-reports",
            (
                Field("ready", "bool", "no check fails and every check could be answered"),
                Field("checksFailed", "long", "checks with status fail"),
                Field("checksWarned", "long", "checks with status warn"),
                Field("checksManual", "long", "checks a person has to look at"),
                Field("checksPassed", "long", "checks that pass"),
            ),
        ),
    )
}

_log = logging.getLogger(EVENT_LOGGER)
_TYPES: dict[Kind, tuple[type, ...]] = {"string": (str,), "long": (int,), "real": (int, float), "bool": (bool,)}


def emit(event: str, **fields: Any) -> None:
    """Log one event as `exoprov.event {json}`, with exactly the fields EVENTS lists for it (None for unknown).

    A name or type that is not in the table raises ValueError: the table is what the templates' queries are
    checked against, so an event that strays from it is a bug, and every call is exercised by the tests.
    """
    spec = EVENTS.get(event)
    if spec is None:
        raise ValueError(f"{event!r} is not an event of shared/events.py")
    if set(fields) != set(spec.names):
        raise ValueError(f"event {event}: fields {sorted(fields)} are not {sorted(spec.names)}")
    for f in spec.fields:
        if not _fits(f.kind, fields[f.name]):
            raise ValueError(f"event {event}: {f.name} must be a {f.kind} or None, not {fields[f.name]!r}")
    if not _log.isEnabledFor(logging.INFO):
        return
    payload = {"event": event, "v": VERSION, "correlationId": correlation_id(), **{n: fields[n] for n in spec.names}}
    _log.info("%s%s", PREFIX, json.dumps(payload, separators=(",", ":"), ensure_ascii=False))


def _fits(kind: Kind, value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):  # a bool is an int to isinstance; only a bool field takes one
        return kind == "bool"
    return isinstance(value, _TYPES[kind])
