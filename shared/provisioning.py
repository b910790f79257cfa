"""The provisioning chain: accept -> license -> mailbox -> configure, one function per step.

Each step reads the tenant, does what is still missing, and returns an outcome: go on to a step after a
delay (which may be itself, to wait), or finish with the request's result. Steps never sleep and never
touch a queue: the dispatcher does that. Every step is idempotent, so a redelivered message converges
on the same tenant state. Transient errors propagate so that the queue retries the message.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import (
    ExoprovError,
    InvalidRequestError,
    JournalUnavailableError,
    LicenseInheritedError,
    NoLicensesError,
    NotFoundError,
    OutcomeUnknownError,
    ThrottledError,
    TransientError,
    UsageLocationError,
    result_code,
)
from shared.exchange import Command, ExchangeClient
from shared.graph import GraphClient, GraphUser, Sku
from shared.journal import Journal, Session
from shared.logs import audit
from shared.mailbox_rules import SHARED_LICENSE_FREE_BYTES, has_archive, size_bytes
from shared.messages import MailboxBefore, Request, Result, StepMessage, parse_request_text
from shared.recovery import CLOUD_MANAGED, LICENSE_ADD, LICENSE_REMOVE, MAILBOX_TYPE, USAGE_LOCATION, settle_request
from shared.settings import Settings, license_allowed

__all__ = ["Chain", "Finish", "Next", "StepOutcome", "UnreadableMessage", "backoff"]

log = logging.getLogger("exoprov.provisioning")

MAILBOX_SELECT = (
    "ExternalDirectoryObjectId",
    "PrimarySmtpAddress",
    "RecipientTypeDetails",
    "IsExchangeCloudManaged",
    "ArchiveStatus",
    "ArchiveGuid",
    "ArchiveDatabase",
    "ArchiveState",
    "LitigationHoldEnabled",
)
SET_MAILBOX_TYPE = {"Shared": "Shared", "Room": "Room", "Equipment": "Equipment"}
TRANSIENT_RETRIES = 8  # a step's own retries of transient errors, before the queue's (host.json) take over
# Waiting for Entra replication: seconds, not the minutes of POLL_*; first look again after 1 s, then 2, 4 ...
LAG_POLL_FIRST_SECONDS = 1.0
LAG_POLL_MAX_SECONDS = 30.0
# The journal session of the step run this thread runs (the chain object is shared by every thread).
_SESSION: contextvars.ContextVar[Session] = contextvars.ContextVar("exoprov_step_session")


@dataclass(frozen=True)
class Next:
    """Send `message` to `message.step`'s queue after `delay` seconds."""

    message: StepMessage
    delay: float


@dataclass(frozen=True)
class Finish:
    """The request is over; `result` goes to the results queue."""

    result: Result


StepOutcome = Next | Finish


class UnreadableMessage(Exception):
    """A message with no recoverable requestId: nobody can be told, so it is parked on the poison queue."""


@dataclass
class Chain:
    """The steps of the chain, bound to the tenant's clients and the settings."""

    settings: Settings
    graph: GraphClient
    # A factory, not a client: the Exchange client needs a token (for the tenant id), and a worker must
    # start, and wait, even while the identity endpoint is down.
    exchange_client: Callable[[], ExchangeClient]
    journal: Journal
    clock: Callable[[], float] = time.time

    @property
    def exchange(self) -> ExchangeClient:
        return self.exchange_client()

    # -- the steps ------------------------------------------------------------------------------

    def accept(self, text: str, chain_id: str) -> StepOutcome:
        """Validate the HR request (the text `decode_body` made of it); a bad one ends at once with a result."""
        try:
            request = parse_request_text(text, self.settings)
        except InvalidRequestError as exc:
            if exc.request_id is None:
                raise UnreadableMessage(str(exc)) from exc
            return Finish(Result.failed(exc.request_id, exc.upn, result_code(exc), str(exc)))
        now = self.clock()
        log.info("accepted %s for %s (%s)", request.request_id, request.user_principal_name, request.mailbox_type)
        return Next(StepMessage("license", request.to_json(), chain_id, now, now), 0.0)

    def license(self, message: StepMessage) -> StepOutcome:
        """Wait for the synced user, give it a usage location if it has none, license it once, confirm it shows."""
        request = message.parsed_request()
        user = self.graph.get_user(request.user_principal_name)
        if user is None:
            return self._wait(
                message,
                self.settings.sync_wait_minutes,
                "user_not_found",
                f"{request.user_principal_name} did not appear in Entra ID within "
                f"{self.settings.sync_wait_minutes:g} minutes (SYNC_WAIT_MINUTES); check that "
                "it is in the directory sync scope",
            )
        sku = self.graph.find_sku(request.license)
        first_seen = message.state.user_first_seen_at
        if first_seen is None:
            first_seen = self.clock()
        message = dataclasses.replace(
            message, state=dataclasses.replace(message.state, user_first_seen_at=first_seen, user_id=user.id)
        )
        if sku.sku_id not in user.licenses:
            if message.state.license_assigned_at is not None:
                # Graph accepted our assignment; this read came from a replica that has not seen it yet.
                return self._await_replication(
                    message,
                    "licenseAssignedAt",
                    message.state.license_assigned_at,
                    "internal_error",
                    f"Graph accepted the assignment of {sku.part_number} to {request.user_principal_name}, but "
                    "reads of the user still do not show it; the license may yet appear, check the user",
                )
            try:
                message = self._ensure_usage_location(message, request, user)
                self._assign(request, user, sku)
            except UsageLocationError as exc:
                set_at = message.state.usage_location_set_at
                if set_at is None:
                    raise  # the user's own usage location was refused: not a lag of ours
                return self._await_replication(message, "usageLocationSetAt", set_at, result_code(exc), str(exc))
            except NotFoundError as exc:
                # A user that a read just returned can still be unknown to the replica that takes the write.
                return self._await_replication(message, "userFirstSeenAt", first_seen, "user_not_found", str(exc))
            except NoLicensesError as exc:
                # Other requests may be returning units this minute (conversions to shared): wait, bounded.
                self.graph.forget_skus()
                since = message.state.no_free_units_since
                if since is None:
                    since = self.clock()
                message = dataclasses.replace(
                    message, state=dataclasses.replace(message.state, no_free_units_since=since)
                )
                return self._retry_within(
                    message,
                    "noFreeUnitsSince",
                    since,
                    self.settings.license_wait_minutes * 60,
                    result_code(exc),
                    f"{exc}; none came free within {self.settings.license_wait_minutes:g} minutes "
                    "(LICENSE_WAIT_MINUTES)",
                    self.settings.poll_min_seconds,
                    self.settings.poll_max_seconds,
                )
            assigned_at = self.clock()
            # Waiting for our assignment to show is a new wait: its backoff starts again at 1 s, rather than
            # going on from where the wait for the user's replication left it.
            message = dataclasses.replace(
                message, state=dataclasses.replace(message.state, license_assigned_at=assigned_at, lag_polls=0)
            )
            confirmed = self.graph.get_user(user.id)
            if confirmed is None or sku.sku_id not in confirmed.licenses:
                return self._await_replication(message, "licenseAssignedAt", assigned_at, "internal_error", "")
        now = self.clock()
        progress = message.state
        following = dataclasses.replace(message, step="mailbox", wait_started_at=now, polls=0, state=progress.settled())
        # Exchange takes minutes to create a mailbox: look first after the shortest poll interval.
        return Next(following, self.settings.poll_min_seconds if progress.licensed_by_chain else 0.0)

    def mailbox(self, message: StepMessage) -> StepOutcome:
        """Wait until Exchange Online has created the mailbox."""
        request = message.parsed_request()
        try:
            box = self._read_mailbox(message.user_id)
        except NotFoundError:
            return self._wait(
                message,
                self.settings.mailbox_wait_minutes,
                "mailbox_timeout",
                f"no mailbox for {request.user_principal_name} within "
                f"{self.settings.mailbox_wait_minutes:g} minutes (MAILBOX_WAIT_MINUTES) of licensing",
            )
        # What the mailbox reads before the chain writes to it: the journal's "before" of those writes.
        state = dataclasses.replace(message.state, mailbox_before=MailboxBefore.read(box))
        following = dataclasses.replace(message, step="configure", wait_started_at=self.clock(), polls=0, state=state)
        return Next(following, 0.0)

    def configure(self, message: StepMessage) -> StepOutcome:
        """Cloud-manage first, convert, read back until the type shows; only then remove the license."""
        request = message.parsed_request()
        user_id = message.user_id
        if not message.state.written:
            # Cloud management first, so that directory sync cannot revert what follows.
            before = message.state.mailbox_before or MailboxBefore()
            if request.cloud_managed:
                self._set_mailbox(request, user_id, "IsExchangeCloudManaged", before.cloud_managed, True)
            if request.mailbox_type in SET_MAILBOX_TYPE:
                self._set_mailbox(request, user_id, "Type", before.type, SET_MAILBOX_TYPE[request.mailbox_type])
            message = dataclasses.replace(message, state=dataclasses.replace(message.state, written=True))
        box = self._read_mailbox(user_id)
        done = box.get("RecipientTypeDetails") == request.target_details and (
            not request.cloud_managed or box.get("IsExchangeCloudManaged") is True
        )
        if not done:
            return self._wait(
                message,
                self.settings.conversion_wait_minutes,
                "conversion_unverified",
                f"the mailbox still reads {box.get('RecipientTypeDetails')} (cloud-managed "
                f"{box.get('IsExchangeCloudManaged')}) after {self.settings.conversion_wait_minutes:g} "
                "minutes (CONVERSION_WAIT_MINUTES); the license was kept",
                mailbox=box,
            )
        result = self._result(request, box)
        if request.mailbox_type != "User" and not request.keep_license:
            waiting = self._release_license(message, request, box, result)
            if waiting is not None:
                return waiting
        log.info(
            "request %s done: %s %s",
            request.request_id,
            result.recipient_type_details,
            "license removed" if result.license_removed else "license kept",
        )
        return Finish(result)

    # -- running a step ------------------------------------------------------------------------

    def run(self, message: StepMessage) -> StepOutcome:
        """Run the step the message names, with a journal session for the writes it makes."""
        session = self.journal.request_session(message.request_id)
        token = _SESSION.set(session)
        try:
            outcome = self._run(message)
            if isinstance(outcome, Finish):
                # The request's last delivery: nothing later would settle what a crashed one left.
                self._settle_earlier(session, message.request_id)
            return outcome
        finally:
            _SESSION.reset(token)
            try:
                session.close()
            except JournalUnavailableError as exc:
                log.warning("request %s: %s; its next step settles the outcomes", message.request_id, exc)

    def _run(self, message: StepMessage) -> StepOutcome:
        """Run the step the message names; a permanent error ends the request with its code.

        A transient error (throttling, a 5xx, an unclear write) sends the same step again after Retry-After or a
        growing delay, up to TRANSIENT_RETRIES times; every step is idempotent, so running it again is safe.
        Only then does the error reach the queue, whose own retries end on the poison queue.
        """
        step = {"license": self.license, "mailbox": self.mailbox, "configure": self.configure}[message.step]
        request = message.parsed_request()
        if message.step == "license" and not license_allowed(request.license, self.settings.allowed_licenses):
            # ALLOWED_LICENSES changed since the request was accepted: nothing is assigned any more.
            return Finish(
                Result.failed(
                    request.request_id,
                    request.user_principal_name,
                    "license_not_allowed",
                    f"license: {request.license} is no longer in ALLOWED_LICENSES",
                    request.mailbox_type,
                )
            )
        try:
            return step(message)
        except TransientError as exc:
            retries = message.state.retries.get(message.step, 0)  # per step: the state travels along the chain
            if retries >= TRANSIENT_RETRIES:
                raise
            retry_after = exc.retry_after if isinstance(exc, ThrottledError) else None
            delay = (
                retry_after
                if retry_after is not None
                else backoff(self.settings.poll_min_seconds, self.settings.poll_max_seconds, retries)
            )
            log.warning(
                "request %s: %s step meets a transient error (%s); again in %.1f s (retry %d of %d)",
                message.request_id,
                message.step,
                exc,
                delay,
                retries + 1,
                TRANSIENT_RETRIES,
            )
            again = dataclasses.replace(message, state=message.state.retried(message.step))
            return Next(again, delay)
        except ExoprovError as exc:
            code = result_code(exc)
            log.warning("request %s failed in %s: %s", message.request_id, message.step, exc)
            request = message.parsed_request()
            return Finish(
                Result.failed(request.request_id, request.user_principal_name, code, str(exc), request.mailbox_type)
            )

    # -- helpers -------------------------------------------------------------------------------

    def _wait(
        self, message: StepMessage, minutes: float, code: str, why: str, mailbox: dict[str, Any] | None = None
    ) -> StepOutcome:
        """Poll again after a growing delay, or give up with `code` once the deadline has passed."""
        waited = self.clock() - message.wait_started_at
        budget = minutes * 60
        if waited >= budget:
            request = message.parsed_request()
            result = Result.failed(request.request_id, request.user_principal_name, code, why, request.mailbox_type)
            if mailbox:
                self._describe(result, mailbox)
            return Finish(result)
        delay = backoff(self.settings.poll_min_seconds, self.settings.poll_max_seconds, message.polls)
        delay = min(delay, max(budget - waited, 0.0))
        log.info("request %s waits %.1f s in %s (poll %d)", message.request_id, delay, message.step, message.polls + 1)
        return Next(dataclasses.replace(message, polls=message.polls + 1), delay)

    def _await_replication(self, message: StepMessage, since: str, started: float, code: str, why: str) -> StepOutcome:
        """Run the step again shortly: Entra has not replicated a write (or a new user) to every replica yet.

        The window counts from `started` (the progress field named `since`), our own write or our first sight
        of the user; after REPLICATION_WAIT_SECONDS the request ends with `code`, so a real refusal is not
        retried for ever.
        """
        request = message.parsed_request()
        why = why or f"reads of {request.user_principal_name} did not catch up with exoprov's own write"
        window = self.settings.replication_wait_seconds
        why = f"{why} (waited for replication, REPLICATION_WAIT_SECONDS={window:g})"
        return self._retry_within(
            message, since, started, window, code, why, LAG_POLL_FIRST_SECONDS, LAG_POLL_MAX_SECONDS
        )

    def _retry_within(
        self,
        message: StepMessage,
        since: str,
        started: float,
        window: float,
        code: str,
        why: str,
        first: float,
        most: float,
    ) -> StepOutcome:
        """Run the step again after a growing delay while `started` (the field `since`) is less than `window` ago."""
        state = message.state
        waited = self.clock() - started
        if waited >= window:
            request = message.parsed_request()
            return Finish(
                Result.failed(request.request_id, request.user_principal_name, code, why, request.mailbox_type)
            )
        polls = state.lag_polls
        delay = min(backoff(first, most, polls), window - waited)
        log.info("request %s: %s waits %.1f s (%s %.1f s ago)", message.request_id, message.step, delay, since, waited)
        return Next(dataclasses.replace(message, state=dataclasses.replace(state, lag_polls=polls + 1)), delay)

    def _ensure_usage_location(self, message: StepMessage, request: Request, user: GraphUser) -> StepMessage:
        """Give the user a usage location if it has none; the message, noting when the chain set one."""
        if user.usage_location or message.state.usage_location_set_at is not None:
            return message  # never overwrite a usage location the user already has, nor write ours twice
        country = request.usage_location or self.settings.default_usage_location
        if not country:
            raise UsageLocationError(
                f"{request.user_principal_name} has no usageLocation and neither the request nor "
                "DEFAULT_USAGE_LOCATION gives one; set msExchUsageLocation on-premises or send usageLocation"
            )
        self._journaled(
            request, USAGE_LOCATION, user, None, country, lambda: self.graph.set_usage_location(user.id, country)
        )
        return dataclasses.replace(
            message, state=dataclasses.replace(message.state, usage_location_set_at=self.clock())
        )

    def _assign(self, request: Request, user: GraphUser, sku: Sku) -> None:
        if sku.free_units <= 0:
            self.graph.forget_skus()  # the count may be stale; the next request reads it fresh
            raise NoLicensesError(f"{sku.part_number} has no free units ({sku.free_units} left)")
        after = sorted({*user.licenses, sku.sku_id})
        self._journaled(
            request,
            LICENSE_ADD,
            user,
            sorted(user.licenses),
            after,
            lambda: self.graph.assign_exchange_license(user.id, sku),
        )

    def _settle_earlier(self, session: Session, request_id: str) -> None:
        """Settle what earlier deliveries of this request left unsettled (the ledger's lease says they are gone)."""
        if session.settled_others:
            return
        session.settled_others = True
        try:
            settle_request(self.journal, request_id, self.exchange_client, lambda: self.graph, session.name)
        except JournalUnavailableError as exc:
            if session.written:
                raise
            log.warning("request %s: %s; a later delivery settles its journal", request_id, exc)

    def _set_mailbox(self, request: Request, user_id: str, parameter: str, before: Any, value: Any) -> None:
        def write() -> bool:
            return self.exchange.invoke(Command("Set-Mailbox", {"Identity": user_id, parameter: value})).unchanged

        action = CLOUD_MANAGED if parameter == "IsExchangeCloudManaged" else MAILBOX_TYPE
        self._journaled(request, action, user_id, before, value, write)

    def _journaled(
        self,
        request: Request,
        action: str,
        target: GraphUser | str,
        before: Any,
        after: Any,
        write: Callable[[], bool | None],
    ) -> None:
        """Make one write with its journal entry: the intent first (no entry, no write), the outcome after."""
        session = _SESSION.get()
        self._settle_earlier(session, request.request_id)
        target_id = target.id if isinstance(target, GraphUser) else target
        name = target.user_principal_name if isinstance(target, GraphUser) else request.user_principal_name
        entry = session.entry(action, target_id, name, before, after)
        session.intend([entry])
        try:
            unchanged = write() is True
        except OutcomeUnknownError as exc:
            session.record(entry.entry_id, "unknown", str(exc))
            raise
        except ExoprovError as exc:
            session.record(entry.entry_id, "failed", str(exc))
            raise
        session.record(entry.entry_id, "noop" if unchanged else "applied")
        audit(action, name, before, after, request_id=request.request_id, noop=unchanged)

    def _read_mailbox(self, user_id: str) -> dict[str, Any]:
        (box,) = self.exchange.invoke(Command("Get-Mailbox", {"Identity": user_id}, MAILBOX_SELECT)).value
        return box

    def _result(self, request: Request, box: dict[str, Any]) -> Result:
        result = Result(request.request_id, request.user_principal_name, "succeeded", request.mailbox_type)
        self._describe(result, box)
        return result

    @staticmethod
    def _describe(result: Result, box: dict[str, Any]) -> None:
        result.primary_smtp_address = box.get("PrimarySmtpAddress")
        result.recipient_type_details = box.get("RecipientTypeDetails")
        result.is_exchange_cloud_managed = box.get("IsExchangeCloudManaged")

    def _release_license(
        self, message: StepMessage, request: Request, box: dict[str, Any], result: Result
    ) -> StepOutcome | None:
        """Remove the temporary license from a verified non-user mailbox that no longer needs it, and confirm it.

        Returns None when `result` is final, or the outcome that waits for Graph's reads to show the removal.
        """
        if box.get("RecipientTypeDetails") == "UserMailbox":
            raise AssertionError("refusing to remove a license from a mailbox that reads UserMailbox")
        user_id = message.user_id
        user = self.graph.get_user(user_id)
        if user is None:
            raise NotFoundError(f"{request.user_principal_name} disappeared from Entra ID")
        sku = self.graph.find_sku(request.license)
        if sku.sku_id not in user.licenses:
            result.license_removed = True  # this step removed it, or an earlier delivery of this message did
            return None
        group = user.licenses[sku.sku_id]
        if group:
            raise LicenseInheritedError(
                f"{request.user_principal_name} was converted to {box.get('RecipientTypeDetails')}, but "
                f"{sku.part_number} is inherited from group {group} and cannot be removed from the user; "
                "remove the user from that group"
            )
        removed_at = message.state.license_removed_at
        if removed_at is None:
            reason = self._license_still_needed(request, user_id, box)
            if reason:
                result.notes.append(f"license kept: {reason}")
                return None
            after = sorted(set(user.licenses) - {sku.sku_id})
            self._journaled(
                request,
                LICENSE_REMOVE,
                user,
                sorted(user.licenses),
                after,
                lambda: self.graph.remove_license(user.id, sku),
            )
            removed_at = self.clock()
            message = dataclasses.replace(
                message, state=dataclasses.replace(message.state, license_removed_at=removed_at)
            )
            confirmed = self.graph.get_user(user_id)
            if confirmed is not None and sku.sku_id not in confirmed.licenses:
                result.license_removed = True
                return None
        waited = self.clock() - removed_at
        if waited >= self.settings.replication_wait_seconds:
            result.notes.append(
                f"Graph accepted the removal of {sku.part_number}, but reads still showed it after {waited:.0f} s "
                "(REPLICATION_WAIT_SECONDS); check the user's licenses"
            )
            return None
        return self._await_replication(message, "licenseRemovedAt", removed_at, "internal_error", "")

    def _license_still_needed(self, request: Request, user_id: str, box: dict[str, Any]) -> str | None:
        """Why the mailbox still needs its license (archive, hold, 50 GB or more), or None."""
        if has_archive(box):
            return "the mailbox has an archive"
        if box.get("LitigationHoldEnabled") is True:
            return "the mailbox is on litigation hold"
        (stats,) = self.exchange.invoke(Command("Get-MailboxStatistics", {"Identity": user_id})).value
        size = size_bytes(stats.get("TotalItemSize"))
        if size is None:
            return f"its size could not be read ({stats.get('TotalItemSize')!r})"
        if size >= SHARED_LICENSE_FREE_BYTES:
            kind = request.mailbox_type.lower()
            return (
                f"the mailbox holds {size / 1024**3:.1f} GB, at or above the 50 GB a {kind} mailbox may hold unlicensed"
            )
        return None


def backoff(first: float, most: float, attempt: int) -> float:
    """`first` doubled `attempt` times, at most `most`; safe for any attempt count (2**1100 overflows a float)."""
    return min(most, first * 2.0 ** min(attempt, 60))
