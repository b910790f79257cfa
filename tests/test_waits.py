"""Where the chain waits: a short wait within its delivery, a longer one back through the queue."""

from __future__ import annotations

import logging
import time

import pytest

from shared.dispatch import WAIT_IN_PLACE_SECONDS, Dispatcher
from shared.errors import TransientError
from shared.messages import ChainProgress, StepMessage
from shared.provisioning import Next, StepOutcome
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
    """The read-back's looks at 1 s and 2 s happen in the delivery: no license message goes back on the queue."""
    slept, sent, status = _provision_after_an_assignment_lagging(sandbox, caplog, lag=2.0)
    assert status == "succeeded"
    assert slept and sum(slept) <= WAIT_IN_PLACE_SECONDS
    assert len(sent) == 1  # the accept step's; the waits did not send the license step again


def test_a_wait_beyond_what_is_left_of_three_seconds_goes_back_through_the_queue(chain_env, sandbox, caplog) -> None:
    """After the looks at 1 s and 2 s in place, the 4 s one no longer fits: the message goes back, visible in 4 s."""
    slept, sent, status = _provision_after_an_assignment_lagging(sandbox, caplog, lag=6.0)  # the look at 3 s: stale
    assert status == "succeeded"
    assert slept == [1.0, 2.0] and sum(slept) == WAIT_IN_PLACE_SECONDS  # 4 s more would pass it
    assert len(sent) == 2 and sent[1].endswith("visible in 4 s")


class _Scripted:
    """A chain whose runs answer, in turn, what a test scripted: an outcome, or an exception to raise."""

    def __init__(self, *answers: StepOutcome | Exception) -> None:
        self.answers = list(answers)
        self.runs: list[object] = []

    def run(self, message: object) -> StepOutcome:
        self.runs.append(message)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _in_place(chain: _Scripted) -> tuple[StepOutcome, list[float]]:
    slept: list[float] = []
    dispatcher = Dispatcher(chain, storage=None, ledger=None, sleep=slept.append)  # type: ignore[arg-type]
    return dispatcher._run_waiting_in_place(_step("license", polls=0)), slept


def _step(step: str, polls: int) -> StepMessage:
    request = {"requestId": "r", "userPrincipalName": "r@contoso.com"}
    return StepMessage(step, request, "chain", 0.0, 0.0, polls=polls, state=ChainProgress(user_id="u"))


@pytest.mark.parametrize("delay", [0.0, WAIT_IN_PLACE_SECONDS + 0.5])
def test_a_step_asking_for_no_wait_or_a_long_one_is_not_run_again_in_place(delay: float) -> None:
    """Only a wait of more than nothing, within the budget, is slept out in place (no loop on a zero delay)."""
    chain = _Scripted(Next(_step("license", 1), delay))
    outcome, slept = _in_place(chain)
    assert len(chain.runs) == 1 and slept == [] and outcome == Next(_step("license", 1), delay)


def test_a_next_step_is_never_run_in_place() -> None:
    """Going on to another step (the mailbox after the license) is a message on that step's queue, however soon."""
    chain = _Scripted(Next(_step("mailbox", 0), 1.0))
    outcome, slept = _in_place(chain)
    assert len(chain.runs) == 1 and slept == [] and isinstance(outcome, Next) and outcome.message.step == "mailbox"


def test_a_run_again_that_fails_keeps_what_the_runs_before_it_learned() -> None:
    """The failing second run is not the delivery's end: the first run's outcome is recorded, its wait over."""
    chain = _Scripted(Next(_step("license", 1), 1.0), TransientError("Graph answered 503"))
    outcome, slept = _in_place(chain)
    assert slept == [1.0] and len(chain.runs) == 2
    assert outcome == Next(_step("license", 1), 0.0)


def test_the_sleeps_of_one_delivery_add_up_to_at_most_the_budget() -> None:
    """1 s and 2 s fit in WAIT_IN_PLACE_SECONDS; the 4 s after them goes through the queue."""
    chain = _Scripted(Next(_step("license", 1), 1.0), Next(_step("license", 2), 2.0), Next(_step("license", 3), 4.0))
    outcome, slept = _in_place(chain)
    assert slept == [1.0, 2.0] and outcome == Next(_step("license", 3), 4.0)
