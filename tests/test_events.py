"""Operational events (shared/events.py): emitted with their fields by real runs against the sandbox, shaped
as the Functions host forwards them, and the only fields the KQL of the alerts and the workbook reads."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import AzureError, ServiceRequestError

from shared.errors import ExoprovError, JournalUnavailableError
from shared.events import COMMON_FIELDS, EVENTS, PREFIX, emit
from shared.journal import Journal
from shared.logs import EVENT_LOGGER, capture_logs, configure_host, correlation_scope
from shared.runs import run_sweep
from shared.runtime import run_scheduled_readiness, run_scheduled_sweep
from shared.settings import Settings
from shared.wiring import Clients, reset_process_clients
from tests.bicep import parse_bicep
from tests.chain_helpers import collect_results, exoprov, fresh_clients, request, run_worker, submit
from tests.conftest import ROOT
from tests.test_function_app import Invocation

COMMON = [f.name for f in COMMON_FIELDS]


Events = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def events() -> Iterator[Events]:
    """`events(name)`: the payloads of that event logged so far in the test, in order, from any thread."""
    with capture_logs(EVENT_LOGGER) as logs:

        def logged(name: str) -> list[dict[str, Any]]:
            payloads = [_payload(entry["message"]) for entry in logs]
            return [p for p in payloads if p["event"] == name]

        yield logged


def _payload(line: str) -> dict[str, Any]:
    """The JSON of an event line, checked to carry exactly its table's fields, in the table's order."""
    assert line.startswith(PREFIX), line
    payload: dict[str, Any] = json.loads(line.removeprefix(PREFIX))
    assert list(payload) == COMMON + list(EVENTS[payload["event"]].names), payload
    return payload


# -- the run event --------------------------------------------------------------------------------------------


def test_a_scheduled_sweep_in_apply_mode_is_one_run_event_with_its_reports_figures(env, sandbox, events, monkeypatch):
    """The timer's sweep ends with one `run` event: the report's run id, mode and counts, under its run id."""
    monkeypatch.setenv("ENFORCE_MODE", "apply")
    report = run_scheduled_sweep()
    (event,) = events("run")
    assert event == {
        "event": "run",
        "v": 1,
        "correlationId": report.run_id,
        "kind": "sweep",
        "runId": report.run_id,
        "mode": "apply",
        "candidates": 6,
        "changed": 6,
        "failed": 0,
        "unknown": 0,
        "brakeEngaged": False,
        "complete": True,
        "durationSeconds": round(report.duration_seconds, 3),
        "journalError": None,
        "error": None,
    }
    assert event["durationSeconds"] > 0


def test_a_sweep_stopped_by_the_brake_says_so(env, sandbox, events, monkeypatch):
    """More candidates than ENFORCE_MAX_CHANGES: brakeEngaged, nothing changed (what the sweep-failed alert reads)."""
    monkeypatch.setenv("ENFORCE_MODE", "apply")
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "1")
    run_scheduled_sweep()
    (event,) = events("run")
    assert (event["brakeEngaged"], event["candidates"], event["changed"], event["mode"]) == (True, 6, 0, "apply")


def test_a_sweep_that_raises_is_a_run_event_with_the_error_and_no_figures(env, sandbox, events):
    """The identity lost its Exchange role: the sweep raises, and its run event names the error (runId kept)."""
    sandbox.knobs(roles={"https://outlook.office365.com": []})
    with pytest.raises(ExoprovError) as raised:
        run_scheduled_sweep()
    (event,) = events("run")
    assert event["error"].startswith(f"{type(raised.value).__name__}: ")
    assert event["runId"] == event["correlationId"] and event["mode"] == "report"
    assert event["candidates"] is None and event["complete"] is None and event["durationSeconds"] >= 0


def test_a_sweep_whose_settings_are_wrong_is_a_failed_run_event_too(env, sandbox, events, monkeypatch):
    """A wrong app setting stops the timer before any run begins; the failed-run alert still gets its event."""
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "abc")
    reset_process_clients()
    try:
        with pytest.raises(ExoprovError):
            run_scheduled_sweep()
    finally:
        reset_process_clients()
    (event,) = events("run")
    assert event["error"].startswith("ConfigurationError: ") and "ENFORCE_MAX_CHANGES" in event["error"]
    assert event["mode"] == "unknown" and event["candidates"] is None


# -- the result event -----------------------------------------------------------------------------------------


def test_each_result_sent_is_one_result_event_with_status_code_type_and_seconds(chain_env, sandbox, events):
    """A shared mailbox that succeeds and a request that breaks the contract: one event each, as sent."""
    sandbox.add_user(upn="evented.shared@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("ev-ok", "evented.shared@contoso.com", mailboxType="Shared"), request("ev-bad", "no-at"))
    assert run_worker(clients) == 0
    sent = collect_results(clients)
    by_id = {e["requestId"]: e for e in events("result")}
    assert sorted(by_id) == sorted(sent) == ["ev-bad", "ev-ok"] and len(events("result")) == 2
    ok, bad = by_id["ev-ok"], by_id["ev-bad"]
    assert (ok["status"], ok["code"], ok["mailboxType"], ok["correlationId"]) == ("succeeded", None, "Shared", "ev-ok")
    assert isinstance(ok["seconds"], float) and 0 < ok["seconds"] < 120
    assert (bad["status"], bad["code"], bad["seconds"]) == ("failed", "invalid_request", None)
    assert sent["ev-bad"][0]["error"]["code"] == "invalid_request"


def test_a_request_that_gives_up_is_an_internal_error_result_event(chain_env, sandbox, events):
    """Graph down for good: the poison path's internal_error result is an event too, timed from acceptance."""
    sandbox.add_user(upn="evented.unlucky@contoso.com")
    sandbox.knobs(graph_fault_503_rate=1.0)
    clients = fresh_clients()
    submit(clients, request("ev-poison", "evented.unlucky@contoso.com"))
    assert run_worker(clients) == 0
    (event,) = events("result")
    assert (event["requestId"], event["status"], event["code"]) == ("ev-poison", "failed", "internal_error")
    assert event["seconds"] is not None and event["seconds"] >= 0


# -- the journal_error event ----------------------------------------------------------------------------------


def test_a_journal_that_refuses_writes_is_a_journal_error_event_and_the_runs_journal_error(
    env, sandbox, events, monkeypatch
):
    """Appends fail (the settling reads work): a write journal_error under the run id, and no mailbox changed."""
    from azure.storage.blob import BlobClient

    def refuse(self: BlobClient, *args: Any, **kwargs: Any) -> None:
        raise ServiceRequestError("the storage account refused the append (test)")

    monkeypatch.setattr(BlobClient, "append_block", refuse)
    report = run_sweep(fresh_clients(), apply=True)
    assert report.changed == 0 and sandbox.stats()["writes"] == {}
    failures = events("journal_error")
    assert failures and all(e["write"] is True and e["operation"] == "append" for e in failures)
    assert all(e["correlationId"] == report.run_id and "refused the append" in e["error"] for e in failures)
    (run,) = events("run")
    assert run["journalError"] and "journal" in run["journalError"] and run["complete"] is False


def test_a_journal_read_that_fails_is_a_journal_error_event_that_writes_nothing(events):
    """A listing that fails is an event too, marked as no write (the journal alert reads only writes)."""

    class Broken:
        container_name = "exoprov-journal"

        def list_blobs(self, **kwargs: Any) -> None:
            raise AzureError("the account is unreachable (test)")

    with pytest.raises(JournalUnavailableError):
        Journal(Broken(), "https://example.blob.core.windows.net").sessions("runs/")
    (event,) = events("journal_error")
    assert (event["operation"], event["write"]) == ("list", False) and "unreachable" in event["error"]


# -- the readiness event --------------------------------------------------------------------------------------


def test_a_readiness_report_is_one_readiness_event_with_its_summary(env, sandbox, events):
    """The timer's report: ready and the count of each status, as latest.json says."""
    run_scheduled_readiness()
    latest = json.loads(
        Clients.from_settings(Settings.from_env())
        .storage()
        .reports_container.download_blob("readiness/latest.json")
        .readall()
    )
    (event,) = events("readiness")
    summary = latest["summary"]
    assert event["ready"] is latest["ready"]
    assert [event[f] for f in ("checksFailed", "checksWarned", "checksManual", "checksPassed")] == [
        summary["fail"],
        summary["warn"],
        summary["manual"],
        summary["pass"],
    ]


# -- the line as the host forwards it, and on the CLI ---------------------------------------------------------


def test_on_the_functions_host_an_event_is_one_line_that_starts_with_the_prefix() -> None:
    """The host forwards the message text only: an event line passes at INFO and is not led by `[id]`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # stands in for the worker's handler on the root logger
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        configure_host()
        with correlation_scope("req-9"):
            emit("readiness", ready=False, checksFailed=1, checksWarned=2, checksManual=0, checksPassed=7)
            logging.getLogger("exoprov.sample").warning("an ordinary line")
    finally:
        root.removeHandler(handler)
    event_line, ordinary = stream.getvalue().splitlines()
    assert (
        event_line.startswith(PREFIX + "{") and json.loads(event_line.removeprefix(PREFIX))["correlationId"] == "req-9"
    )
    assert ordinary == "[req-9] an ordinary line"


def test_the_sweep_timer_logs_its_run_event_as_the_host_receives_it(env, sandbox) -> None:
    """Through the Functions adapter (configure_host, then the core): the event line reaches the host's handler
    on the root logger as it is, next to the sweep's usual one-line summary."""
    import azure.functions as func
    from azure.functions.timer import TimerRequest

    from functions.enforce import bp

    app = func.FunctionApp()
    app.register_functions(bp)
    (timer,) = app.get_functions()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        timer.get_user_function()(TimerRequest(past_due=False), Invocation())
    finally:
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    (event_line,) = [line for line in lines if line.startswith(PREFIX)]
    run = _payload(event_line)
    assert run["event"] == "run" and run["kind"] == "sweep" and run["mode"] == "report" and run["candidates"] == 6
    assert any(line.startswith(f"sweep {run['runId']} (report): 6 candidates, 0 changed") for line in lines)


def test_the_cli_shows_event_lines_only_with_verbose(env, sandbox) -> None:
    """`exoprov sweep` prints no event line on stderr; with -v it prints the run's one."""
    quiet, verbose = exoprov("sweep", "--json"), exoprov("-v", "sweep", "--json")
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert EVENT_LOGGER not in quiet.stderr
    (line,) = [line for line in verbose.stderr.splitlines() if f" {EVENT_LOGGER} " in line]  # the logger's name
    payload = line[line.index(PREFIX + "{") + len(PREFIX) :]
    assert json.loads(payload)["runId"] == json.loads(verbose.stdout)["runId"]


@pytest.mark.parametrize(
    ("event", "fields", "problem"),
    [
        ("sweep", {}, "not an event"),
        ("readiness", {"ready": True}, "are not"),
        ("readiness", {"ready": 1, "checksFailed": 0, "checksWarned": 0, "checksManual": 0, "checksPassed": 0}, "bool"),
        (
            "readiness",
            {"ready": True, "checksFailed": True, "checksWarned": 0, "checksManual": 0, "checksPassed": 0},
            "long",
        ),
        ("result", {"requestId": 7, "status": "x", "code": None, "mailboxType": None, "seconds": None}, "string"),
    ],
)
def test_an_event_that_strays_from_the_table_is_refused(event: str, fields: dict[str, Any], problem: str) -> None:
    """Unknown events, missing or extra fields and wrong types raise: the table is what the queries rely on."""
    with pytest.raises(ValueError, match=problem):
        emit(event, **fields)


# -- every field the KQL reads is one the product writes ------------------------------------------------------

MONITORING = ROOT / "infra" / "app" / "monitoring.bicep"
CONVERSIONS = {
    "tostring": {"string"},
    "toint": {"long"},
    "tolong": {"long"},
    "todouble": {"real", "long"},
    "tobool": {"bool"},
}


def _template() -> dict[str, Any]:
    return parse_bicep(MONITORING)


def _query_names() -> list[str]:
    """The names of the template's alert rules and panels, read from its text (the test below checks them against
    the parsed template): enough to name the parametrized tests without parsing Bicep in every process."""
    text = MONITORING.read_text(encoding="utf-8")
    names = []
    for group in ("rules", "panels"):
        block = re.search(rf"^var {group} = \[\n(.*?)^\]", text, re.DOTALL | re.MULTILINE)
        assert block, f"monitoring.bicep has no 'var {group}' list"
        names += [f"{group}.{name}" for name in re.findall(r"^    name: '([^']+)'", block.group(1), re.MULTILINE)]
    return sorted(names)


def _resolve(text: str, variables: dict[str, Any], depth: int = 0) -> str:
    """A Bicep string with its `${variable}` interpolations replaced by those variables' (string) values."""
    assert depth < 10, text

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in variables and isinstance(variables[name]["value"], str), f"${{{name}}} is not a string variable"
        return _resolve(variables[name]["value"], variables, depth + 1)

    return re.sub(r"\$\{(\w+)\}", value, text)


def queries() -> dict[str, str]:
    """Every KQL query of the template, alerts and workbook panels, by name, with its variables resolved."""
    variables = _template()["variables"]
    found = {}
    for group in ("rules", "panels"):
        for item in variables[group]["value"]:
            query = _resolve(item["query"], variables)
            # A parameter's expression (the no-sweep window) is only a number in the KQL: the default stands in.
            found[f"{group}.{item['name']}"] = query.replace("${2 * sweepIntervalHours}", "8")
    return found


def test_the_template_has_the_alerts_and_panels_the_issue_asks_for() -> None:
    """Four alert rules and the workbook's panels; the test below reads each one's query."""
    names = set(queries())
    assert names == set(_query_names())
    assert {"rules.sweep-failed", "rules.request-failed", "rules.no-sweep", "rules.journal-failed"} <= names
    assert {"panels.progress", "panels.durations", "panels.writes", "panels.results", "panels.slowest"} <= names


@pytest.mark.parametrize("name", _query_names())
def test_every_field_a_query_reads_is_one_the_product_writes(name: str) -> None:
    """Each query reads event lines by the product's prefix, filters on events of the table, and reads only
    their fields (or the common ones), each with the conversion its type takes."""
    query = queries()[name]
    assert f'traces | where message startswith "{PREFIX}"' in query
    assert f'parse_json(substring(message, strlen("{PREFIX}")))' in query
    assert "${" not in query
    filtered = set(re.findall(r'tostring\(e\.event\) == "(\w+)"', query))
    assert filtered and filtered <= set(EVENTS), f"{name} filters on {filtered}"
    kinds = {f.name: f.kind for f in COMMON_FIELDS} | {f.name: f.kind for e in filtered for f in EVENTS[e].fields}
    read = set(re.findall(r"\be\.(\w+)", query)) | set(re.findall(r"\be\[\"(\w+)\"\]", query))
    assert read <= set(kinds), f"{name} reads {sorted(read - set(kinds))}, which no event it filters on writes"
    for function, field in re.findall(r"\b(to\w+)\(e\.(\w+)\)", query):
        assert kinds[field] in CONVERSIONS[function], f"{name}: {function}(e.{field}) but {field} is a {kinds[field]}"


def test_every_event_the_product_writes_is_read_by_some_query() -> None:
    """No event is written for nobody: each one appears in an alert or a panel."""
    read = {event for query in queries().values() for event in re.findall(r'tostring\(e\.event\) == "(\w+)"', query)}
    assert read == set(EVENTS)
