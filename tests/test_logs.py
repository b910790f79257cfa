"""Logs: audit events shown without -v, correlation ids stamped by a filter, traces never sampled on Azure."""

from __future__ import annotations

import io
import json
import logging
import re
import threading

import pytest

from shared.logs import CorrelationFilter, audit, capture_logs, configure_host, correlation_scope
from tests.chain_helpers import exoprov, fresh_clients, request, submit
from tests.conftest import ROOT


def test_sweep_apply_shows_each_write_on_stderr_without_verbose(env, sandbox) -> None:
    """`exoprov sweep --apply` prints one audit line per flip, each led by the run id of its report."""
    result = exoprov("sweep", "--apply", "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["runId"]
    writes = [line for line in result.stderr.splitlines() if "exoprov.audit" in line]
    assert len(writes) == 6
    assert all(f"[{run_id}]: write Set-Mailbox -IsExchangeCloudManaged on " in line for line in writes)
    assert all(line.endswith("False -> True") for line in writes)
    assert "exoprov.http" not in result.stderr  # the calls themselves stay at INFO, behind -v


def test_the_worker_shows_the_chains_writes_with_the_request_id(chain_env, sandbox) -> None:
    """`exoprov worker` prints the chain's writes without -v, each line led by its requestId."""
    sandbox.add_user(upn="logged.worker@contoso.com", usageLocation="DE")
    submit(fresh_clients(), request("log-w", "logged.worker@contoso.com", mailboxType="Shared"))
    result = exoprov("worker", "--until-idle", "--no-sweep", "--timeout", "90")
    assert result.returncode == 0, result.stderr
    writes = [line for line in result.stderr.splitlines() if "exoprov.audit" in line]
    actions = [re.search(r"write (.+?) on ", line).group(1) for line in writes]  # type: ignore[union-attr]
    assert actions == ["license.add", "Set-Mailbox -IsExchangeCloudManaged", "Set-Mailbox -Type", "license.remove"]
    assert all("[log-w]: " in line and "(request log-w)" in line for line in writes)


def test_the_filter_stamps_the_correlation_id_on_records_of_any_logger() -> None:
    """A handler with the filter sees the correlation id on exoprov's records and on a library's alike."""
    with capture_logs(logger="", level=logging.WARNING) as logs:
        with correlation_scope("run-7"):
            logging.getLogger("exoprov.sample").warning("one %s", "thing")
            logging.getLogger("urllib3.sample").warning("another")
        logging.getLogger("exoprov.sample").warning("outside")
    assert [(entry["name"], entry["correlation_id"], entry["message"]) for entry in logs] == [
        ("exoprov.sample", "run-7", "one thing"),
        ("urllib3.sample", "run-7", "another"),
        ("exoprov.sample", "-", "outside"),
    ]


def test_on_the_functions_host_exoprovs_messages_start_with_the_correlation_id() -> None:
    """The host forwards only the message text, so configure_host() puts the id in front of it, once."""
    streams = [io.StringIO(), io.StringIO()]
    handlers = [logging.StreamHandler(s) for s in streams]  # the host's handler, and a second one
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    try:
        configure_host()
        configure_host()  # every invocation calls it; the filter goes on once
        with correlation_scope("req-9"):
            audit("license.add", "someone@contoso.com", [], ["sku"], request_id="req-9")
            logging.getLogger("azure.core").warning("a library's line keeps its text")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
    for stream in streams:
        lines = stream.getvalue().splitlines()
        assert lines[0] == "[req-9] write license.add on someone@contoso.com (request req-9): [] -> ['sku']"
        assert lines[1] == "a library's line keeps its text"
    assert sum(isinstance(f, CorrelationFilter) for f in handlers[0].filters) == 1


def test_capture_logs_keeps_each_record_of_exoprov_as_a_plain_dict() -> None:
    """Name, level, formatted message, correlation id and the record's own attributes (an audit event's data)."""
    with capture_logs() as logs, correlation_scope("run-3"):
        audit("Set-Mailbox -Type", "box@contoso.com", "Regular", "Shared", request_id="req-3")
        logging.getLogger("exoprov.sample").info("%d mailboxes", 2)
        logging.getLogger("exoprov.sample").debug("below the level")
        logging.getLogger("urllib3.sample").warning("not exoprov's")
    write, line = logs
    assert line == {"name": "exoprov.sample", "level": "INFO", "message": "2 mailboxes", "correlation_id": "run-3"}
    assert write == {
        "name": "exoprov.audit",
        "level": "INFO",
        "message": "write Set-Mailbox -Type on box@contoso.com (request req-3): Regular -> Shared",
        "correlation_id": "run-3",
        "audit": {
            "action": "Set-Mailbox -Type",
            "target": "box@contoso.com",
            "before": "Regular",
            "after": "Shared",
            "noop": False,
            "requestId": "req-3",
            "correlationId": "run-3",
        },
    }


def test_capture_logs_takes_records_of_other_threads_with_their_own_correlation_id_and_traceback() -> None:
    """The filter runs on the thread that logs, so a record carries that thread's id; a traceback comes as text."""

    def fail_on_a_thread() -> None:
        with correlation_scope("req-4"):
            try:
                raise ValueError("no such mailbox")
            except ValueError:
                logging.getLogger("exoprov.sample").exception("the step failed")

    with capture_logs(level=logging.WARNING) as logs, correlation_scope("run-4"):
        thread = threading.Thread(target=fail_on_a_thread)
        thread.start()
        thread.join()
    (entry,) = logs
    assert (entry["level"], entry["message"], entry["correlation_id"]) == ("ERROR", "the step failed", "req-4")
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: no such mailbox")


def test_capture_logs_restores_the_loggers_level_and_handlers_even_when_the_block_raises() -> None:
    """Inside, the logger passes `level` to one more handler; after, it is as it was and the list no longer grows."""
    sample = logging.getLogger("exoprov.sample")
    before = (sample.level, list(sample.handlers))
    with pytest.raises(RuntimeError), capture_logs("exoprov.sample", logging.DEBUG) as logs:
        assert sample.level == logging.DEBUG and len(sample.handlers) == len(before[1]) + 1
        sample.debug("inside")
        raise RuntimeError("the test failed")
    assert (sample.level, sample.handlers) == before
    sample.warning("after")
    assert [entry["message"] for entry in logs] == ["inside"]


def test_host_json_never_samples_traces_away_and_lets_function_logs_through() -> None:
    """Traces are excluded from Application Insights sampling, and the Function category logs at Information.

    excludedTypes sits inside samplingSettings and lists types never sampled (Dependency, Event, Exception,
    PageView, Request, Trace): MicrosoftDocs/azure-docs#47219 and the host.json reference on Microsoft Learn.
    Python log records reach the host as category `Function.<name>.User` (MicrosoftDocs/azure-docs#102112),
    so the "Function" key, not a Python logger name, decides whether they pass.
    """
    host = json.loads((ROOT / "host.json").read_text())
    excluded = host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"].split(";")
    assert "Trace" in excluded
    assert host["logging"]["logLevel"]["Function"] == "Information"
    assert not any(key.startswith("exoprov") for key in host["logging"]["logLevel"])
