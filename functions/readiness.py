"""Timer: the readiness report on READINESS_SCHEDULE, written to the exoprov-reports container."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves its constructor untyped
log = logging.getLogger("exoprov.functions")


@bp.timer_trigger(schedule="%READINESS_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def readiness_report(timer: func.TimerRequest, context: func.Context) -> None:
    """Write one report (JSON and HTML, for the day and as latest); a failure is raised so the host records it."""
    # Imported here so that indexing the app (cold start) does not pay for the core.
    from functions.invocation import enter
    from shared.runtime import run_scheduled_readiness

    enter(context)
    if timer.past_due:
        log.warning("the readiness timer is past due; running now")
    run_scheduled_readiness()
