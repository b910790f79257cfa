"""Timer: the cloud-management sweep on ENFORCE_SCHEDULE, in ENFORCE_MODE."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves its constructor untyped
log = logging.getLogger("exoprov.functions")


@bp.timer_trigger(schedule="%ENFORCE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def enforce_cloud_managed(timer: func.TimerRequest, context: func.Context) -> None:
    """Run one sweep; a failure is logged with its report and raised so the host records it."""
    # Imported here so that indexing the app (cold start) does not pay for the core.
    from functions.invocation import enter
    from shared.runtime import run_scheduled_sweep

    enter(context)
    if timer.past_due:
        log.warning("the sweep timer is past due; running now")
    run_scheduled_sweep()
