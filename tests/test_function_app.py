"""The Functions app indexes as the host would, and its timer adapters run the core sweep and the report."""

from __future__ import annotations

import json
import re
import threading

import pytest
from azure.functions import HttpRequest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from shared.queues import CHAIN_QUEUES, MAX_DEQUEUE_COUNT, POISON_QUEUES
from shared.settings import Settings
from shared.wiring import Clients, reset_process_clients
from tests.conftest import ROOT


class ThreadStorage:
    """The worker's thread-local storage as the adapters see it, recording which thread set which invocation."""

    bound: list[tuple[str, str, object]]

    def __init__(self) -> None:
        object.__setattr__(self, "bound", [])

    def __setattr__(self, name: str, value: object) -> None:
        self.bound.append((threading.current_thread().name, name, value))


class Invocation:
    """What the Python worker passes as `context`: the invocation id, and the thread storage its handler reads."""

    def __init__(self) -> None:
        self.invocation_id = "3c9e5f1a-0000-4000-8000-000000000001"
        self.thread_local_storage = ThreadStorage()


@pytest.fixture(scope="module")
def functions():
    from function_app import app

    # get_functions() caches names and refuses a second call on one app: index once per module.
    return {f.get_function_name(): f for f in app.get_functions()}


def test_the_app_indexes_the_timer_on_the_schedule_setting(functions) -> None:
    """The host finds enforce_cloud_managed, a timer on %ENFORCE_SCHEDULE% that does not run on startup."""
    trigger = json.loads(functions["enforce_cloud_managed"].get_function_json())["bindings"][0]
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == "%ENFORCE_SCHEDULE%"
    assert trigger["runOnStartup"] is False


def test_the_timer_runs_one_sweep_in_enforce_mode(functions, env, sandbox, monkeypatch) -> None:
    """A past-due tick with ENFORCE_MODE=apply flips the candidates; its threads tie their logs to the invocation."""
    monkeypatch.setenv("ENFORCE_MODE", "apply")
    invocation = Invocation()
    reset_process_clients()
    try:
        functions["enforce_cloud_managed"].get_user_function()(TimerRequest(past_due=True), invocation)
    finally:
        reset_process_clients()
    assert sum(not m["cloudManaged"] for m in sandbox.mailboxes() if m["dirSynced"]) == 0
    # The writes are logged on the sweep's own threads: each ties itself to the invocation, or the host drops it.
    threads = {
        thread for thread, name, value in invocation.thread_local_storage.bound if value == invocation.invocation_id
    }
    assert any(thread.startswith("exoprov-sweep") for thread in threads), threads


def test_the_readiness_timer_writes_the_report_to_the_reports_container(functions, env, sandbox) -> None:
    """readiness_report is a timer on %READINESS_SCHEDULE%; a tick stores the day's report and latest as blobs."""
    trigger = json.loads(functions["readiness_report"].get_function_json())["bindings"][0]
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == "%READINESS_SCHEDULE%"
    assert trigger["runOnStartup"] is False
    reset_process_clients()
    try:
        functions["readiness_report"].get_user_function()(TimerRequest(past_due=False), Invocation())
    finally:
        reset_process_clients()
    storage = Clients.from_settings(Settings.from_env()).storage()
    names = {blob.name for blob in storage.reports_container.list_blobs()}
    assert {"readiness/latest.json", "readiness/latest.html"} <= names
    assert any(re.fullmatch(r"readiness/\d{4}-\d{2}-\d{2}\.html", name) for name in names)


QUEUE_FUNCTIONS = {
    "accept_request": "provision-requests",
    "license_user": "provision-license",
    "wait_for_mailbox": "provision-mailbox",
    "configure_mailbox": "provision-configure",
    "request_gave_up": "provision-requests-poison",
    "license_gave_up": "provision-license-poison",
    "mailbox_gave_up": "provision-mailbox-poison",
    "configure_gave_up": "provision-configure-poison",
}


def test_the_doctor_runs_as_the_app_behind_a_function_key(functions, chain_env) -> None:
    """GET /api/doctor (function key) runs every check with the app's own identity: 200 and the report."""
    (trigger, _) = json.loads(functions["doctor"].get_function_json())["bindings"]
    assert (trigger["type"], trigger["route"], trigger["authLevel"]) == ("httpTrigger", "doctor", "FUNCTION")
    response = functions["doctor"].get_user_function()(HttpRequest("GET", "/api/doctor", body=b""))
    assert response.status_code == 200
    assert "all checks passed" in response.get_body().decode() and "  ok  storage" in response.get_body().decode()


def test_the_doctor_answers_503_when_a_check_fails(functions, env, sandbox) -> None:
    """A missing grant makes the doctor endpoint answer 503 with the failing line and its fix."""
    sandbox.knobs(roles={"https://outlook.office365.com": []})
    response = functions["doctor"].get_user_function()(HttpRequest("GET", "/api/doctor", body=b""))
    assert response.status_code == 503 and "FAIL  exchange role" in response.get_body().decode()


def test_every_chain_queue_and_its_poison_queue_has_a_trigger(functions) -> None:
    """One queue trigger per step and per poison queue, all on the AzureWebJobsStorage connection."""
    for name, queue in QUEUE_FUNCTIONS.items():
        (trigger,) = json.loads(functions[name].get_function_json())["bindings"]
        assert (trigger["type"], trigger["queueName"], trigger["connection"]) == (
            "queueTrigger",
            queue,
            "AzureWebJobsStorage",
        )
    assert set(QUEUE_FUNCTIONS.values()) == set(CHAIN_QUEUES) | set(POISON_QUEUES)


def test_host_json_and_the_worker_apply_the_same_queue_rules() -> None:
    """Both runtimes give up after the same number of tries, wait the same before a retry, and read plain text."""
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    assert queues["maxDequeueCount"] == MAX_DEQUEUE_COUNT
    assert queues["visibilityTimeout"] == f"00:00:{Settings.from_env({}).queue_retry_seconds:02d}"
    assert queues["messageEncoding"] == "none"
    assert queues["batchSize"] + queues["newBatchThreshold"] <= 4


def test_the_accept_trigger_runs_the_chain_step(functions, chain_env, sandbox) -> None:
    """The request trigger hands the message to the core, which sends the first step message."""
    reset_process_clients()
    try:
        body = json.dumps({"requestId": "fn-1", "userPrincipalName": "UserNoMailNoEXO@contoso.com"}).encode()
        message = QueueMessage(id="m-1", body=body)  # type: ignore[no-untyped-call]
        functions["accept_request"].get_user_function()(message, Invocation())
        storage = Clients.from_settings(Settings.from_env()).storage()
        (message,) = storage.queue("provision-license").receive_messages()
        assert json.loads(message.content)["request"]["requestId"] == "fn-1"
    finally:
        reset_process_clients()
