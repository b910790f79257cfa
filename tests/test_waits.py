"""Where the chain waits: a short wait within its delivery, a longer one back through the queue."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from shared.dispatch import WAIT_IN_PLACE_SECONDS
from tests.chain_helpers import collect_results, fresh_clients, request, run_worker, submit


def _provision_after_an_assignment_lagging(sandbox, caplog, lag: float) -> tuple[list[float], list[str], str]:
    """One request whose license read-back lags `lag` seconds behind the assignment: the dispatcher's sleeps,
    the license step messages the queues carried, and the result's status."""
    caplog.set_level(logging.INFO, logger="exoprov")
    sandbox.add_user(upn="lagging@contoso.com", usageLocation="DE")  # writable at once: no lag yet
    sandbox.knobs(replication_lag=lag)  # from now on, reads lag behind each write: the assignment
    clients = fresh_clients()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    clients.dispatcher().sleep = sleep
    submit(clients, request("lagging", "lagging@contoso.com"))
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["lagging"]
    sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("queue provision-license: sent")]
    return slept, sent, str(result["status"])


def test_a_wait_within_three_seconds_is_slept_in_the_delivery_not_sent_through_the_queue(
    chain_env, sandbox, caplog
) -> None:
    """The read-back's first 1 s look happens in the delivery: no license message goes back on the queue."""
    slept, sent, status = _provision_after_an_assignment_lagging(sandbox, caplog, lag=0.9)
    assert status == "succeeded"
    assert slept == [1.0]
    assert len(sent) == 1  # the accept step's; the wait did not send the license step again


def test_a_wait_beyond_what_is_left_of_three_seconds_goes_back_through_the_queue(chain_env, sandbox, caplog) -> None:
    """After the looks at 1 s and 2 s in place, the 4 s one no longer fits: the message goes back, visible in 4 s."""
    slept, sent, status = _provision_after_an_assignment_lagging(sandbox, caplog, lag=5.0)
    assert status == "succeeded"
    assert slept == [1.0, 2.0] and sum(slept) == WAIT_IN_PLACE_SECONDS  # 4 s more would pass it
    assert len(sent) == 2 and sent[1].endswith("visible in 4 s")


@pytest.mark.parametrize("delay", [0.0, WAIT_IN_PLACE_SECONDS + 0.5])
def test_a_step_asking_for_no_wait_or_a_long_one_is_not_run_again_in_place(delay: float) -> None:
    """Only a wait of more than nothing, within the budget, is slept out in place (no loop on a zero delay)."""
    from dataclasses import dataclass

    from shared.dispatch import Dispatcher
    from shared.provisioning import Next

    @dataclass
    class Once:
        runs: int = 0

        def run(self, message):
            self.runs += 1
            return Next(message, delay)

    chain = Once()
    dispatcher = Dispatcher(chain, storage=None, ledger=None, sleep=lambda s: None)  # type: ignore[arg-type]
    dispatcher._run_waiting_in_place(SimpleNamespace(step="license", request_id="r"))  # type: ignore[arg-type]
    assert chain.runs == 1
