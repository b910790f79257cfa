"""The Functions app indexes as the host would, and its timer adapter runs the core sweep."""

from __future__ import annotations

import json

import pytest
from azure.functions.timer import TimerRequest

from shared.wiring import reset_process_clients


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
    """A (past-due) timer tick with ENFORCE_MODE=apply flips the candidates through the process's clients."""
    monkeypatch.setenv("ENFORCE_MODE", "apply")
    reset_process_clients()
    try:
        functions["enforce_cloud_managed"].get_user_function()(TimerRequest(past_due=True))
    finally:
        reset_process_clients()
    assert sum(not m["cloudManaged"] for m in sandbox.mailboxes() if m["dirSynced"]) == 0
