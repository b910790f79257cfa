"""The cloud-management sweep: list (streamed) -> plan (pure) -> apply (bounded, verified) -> report.

B10: `IsExchangeCloudManaged` cannot be filtered on server-side, so the listing filters on
`IsDirSynced` only and the plan filters the rest client-side (B11's `Where` clause).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.authority.objects import KINDS
from shared.authority.report import KindReport, not_reached, outcome_fields
from shared.authority.sweep import sweep_kind
from shared.directory import GraphDirectory
from shared.errors import (
    BadRequestError,
    BudgetExhaustedError,
    ExoprovError,
    JournalUnavailableError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ThrottledError,
    TransientError,
    first_line,
)
from shared.exchange import BATCH_LIMIT, Command, ExchangeClient
from shared.journal import Entry, Session
from shared.logs import audit
from shared.recovery import CLOUD_MANAGED
from shared.run_control import BUDGET_NOTE, Cancelled, Progress, StopSignal
from shared.settings import Settings

__all__ = [
    "DIR_SYNCED_FILTER",
    "Applier",
    "ListedMailbox",
    "Plan",
    "Report",
    "TENANT_DEFAULT_PROPERTY",
    "exclusion_keys",
    "list_synced",
    "make_plan",
    "read_tenant_default",
    "sweep",
]

log = logging.getLogger("exoprov.enforcement")

LIST_SELECT = (
    "ExternalDirectoryObjectId",
    "UserPrincipalName",
    "PrimarySmtpAddress",
    "EmailAddresses",
    "RecipientTypeDetails",
    "IsDirSynced",
    "IsExchangeCloudManaged",
)
DIR_SYNCED_FILTER = "IsDirSynced -eq 'True'"
TENANT_DEFAULT_PROPERTY = "BlockExchangeProvisioningFromOnPremEnabled"
LISTING_RESTARTS = 5
# Intents are written for this many $batches at once, one group ahead of sending them: one journal append
# per 500 mailboxes. The first groups are smaller, so that the first writes wait for a small append only.
INTENT_GROUP_BATCHES = 50
INTENT_RAMP = (1, 4, 16)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ListedMailbox:
    """The few properties of a listed mailbox that the plan needs (kept small: tenants are large)."""

    identity: str
    upn: str
    smtp: str
    recipient_type: str
    dir_synced: bool
    cloud_managed: bool

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ListedMailbox:
        upn = str(record.get("UserPrincipalName") or "")
        return cls(
            identity=str(record.get("ExternalDirectoryObjectId") or upn),
            upn=upn,
            smtp=str(record.get("PrimarySmtpAddress") or ""),
            recipient_type=str(record.get("RecipientTypeDetails") or ""),
            dir_synced=record.get("IsDirSynced") is True,
            cloud_managed=record.get("IsExchangeCloudManaged") is True,
        )

    @property
    def label(self) -> str:
        return self.upn or self.identity

    def to_json(self) -> dict[str, str]:
        return {"identity": self.identity, "userPrincipalName": self.upn, "recipientTypeDetails": self.recipient_type}


def exclusion_keys(record: dict[str, Any]) -> frozenset[str]:
    """Every name an ENFORCE_EXCLUDE entry may use for this mailbox: id, UPN, and each of its SMTP addresses."""
    keys = {str(record.get(name) or "") for name in ("ExternalDirectoryObjectId", "UserPrincipalName")}
    keys.add(str(record.get("PrimarySmtpAddress") or ""))
    for address in record.get("EmailAddresses") or []:
        prefix, _, value = str(address).partition(":")
        if value and prefix.lower() == "smtp":
            keys.add(value)
    return frozenset(key.lower() for key in keys if key)


@dataclass
class Plan:
    """What a listing means: counts of every kind, and the mailboxes that should be flipped."""

    scanned: int = 0
    dir_synced: int = 0
    already_cloud_managed: int = 0
    out_of_scope: int = 0
    excluded: int = 0
    candidates: list[ListedMailbox] = field(default_factory=list)
    matched_exclusions: set[str] = field(default_factory=set)

    def add(self, mailbox: ListedMailbox, types: frozenset[str], exclude: frozenset[str], keys: frozenset[str]) -> None:
        """Classify one mailbox; pure apart from the counters, so the same input gives the same plan."""
        self.scanned += 1
        hits = keys & exclude
        self.matched_exclusions |= hits
        if not mailbox.dir_synced:
            return  # B9: cloud-only mailboxes are cloud-managed by nature
        self.dir_synced += 1
        if mailbox.recipient_type not in types:
            self.out_of_scope += 1
        elif mailbox.cloud_managed:
            self.already_cloud_managed += 1
        elif hits:
            self.excluded += 1
        else:
            self.candidates.append(mailbox)

    def add_record(self, record: dict[str, Any], types: frozenset[str], exclude: frozenset[str]) -> None:
        self.add(ListedMailbox.from_record(record), types, exclude, exclusion_keys(record))


def make_plan(records: Iterable[dict[str, Any]], types: frozenset[str], exclude: frozenset[str]) -> Plan:
    """Build the plan from listed records."""
    plan = Plan()
    for record in records:
        plan.add_record(record, types, exclude)
    return plan


@dataclass
class Report:
    """The outcome of one sweep, in the shape the README's "The sweep report" documents."""

    mode: str
    run_id: str = ""
    scanned: int = 0
    dir_synced: int = 0
    already_cloud_managed: int = 0
    out_of_scope: int = 0
    candidates: int = 0
    changed: int = 0
    excluded: int = 0
    failed: int = 0
    unknown: int = 0
    not_attempted: int = 0
    brake_engaged: bool = False
    max_changes: int = 0
    complete: bool = True
    tenant_default_cloud_managed: bool | None = None
    duration_seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    unknowns: list[dict[str, str]] = field(default_factory=list)
    candidate_list: list[dict[str, str]] = field(default_factory=list)
    unmatched_exclusions: list[str] = field(default_factory=list)
    interrupted: bool = False
    journal_error: str | None = None
    undoes: str | None = None  # set on an undo run: the run it takes back
    changed_since: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    objects: tuple[str, ...] = ("mailboxes",)  # ENFORCE_OBJECTS: the kinds this run enforced
    kinds: list[KindReport] = field(default_factory=list)  # one section per kind other than mailboxes

    def total(self, name: str) -> int:
        """A count (`candidates`, `changed`, `failed`, `unknown`) over every kind of the run."""
        return int(getattr(self, name)) + sum(int(getattr(kind, name)) for kind in self.kinds)

    @property
    def braked(self) -> bool:
        return self.brake_engaged or any(kind.brake_engaged for kind in self.kinds)

    @property
    def all_complete(self) -> bool:
        return self.complete and all(kind.complete for kind in self.kinds)

    @property
    def broken(self) -> bool:
        """Something needs a person: a write failed, a kind could not be read, the journal failed, or an undo left
        groups converted because of their cloud members."""
        return bool(
            self.total("failed") or self.journal_error or any(kind.error or kind.blocked for kind in self.kinds)
        )

    def to_json(self) -> dict[str, Any]:
        sections = {kind.kind.name: kind.to_json() for kind in self.kinds}
        if self.undoes is not None:
            return {
                "runId": self.run_id,
                "undoes": self.undoes,
                "mode": self.mode,
                "changedByRun": self.scanned,
                "changedSince": self.changed_since,
                **self._outcomes(),
                "notes": self.notes,
                **sections,
            }
        return {
            "runId": self.run_id,
            "mode": self.mode,
            "objects": list(self.objects),
            "scanned": self.scanned,
            "dirSynced": self.dir_synced,
            "alreadyCloudManaged": self.already_cloud_managed,
            "outOfScope": self.out_of_scope,
            **self._outcomes(),
            "tenantDefaultCloudManaged": self.tenant_default_cloud_managed,
            "unmatchedExclusions": self.unmatched_exclusions,
            "notes": self.notes,
            **sections,
        }

    def _outcomes(self) -> dict[str, Any]:
        """What a sweep and an undo report alike: the candidates and how their writes went."""
        return {
            **outcome_fields(self),
            "journalError": self.journal_error,
            "durationSeconds": round(self.duration_seconds, 3),
            "failures": self.failures,
            "unknowns": self.unknowns,
            "candidateList": self.candidate_list,
        }


def sweep(
    exchange: ExchangeClient | None,
    settings: Settings,
    *,
    apply: bool,
    session: Session,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    directory: Callable[[], GraphDirectory] | None = None,
) -> Report:
    """One sweep of every kind in ENFORCE_OBJECTS: plan each from a fresh listing, then (in apply mode, under
    the brake of each kind) make the candidates cloud-managed.

    Every write is journaled in `session` first. Setting `cancel` (Ctrl-C) stops it submitting: what is in
    flight finishes, and the report says what was done. `exchange` (mailboxes) and `directory` (groups,
    contacts) are needed only for the kinds enforced.
    """
    started = time.monotonic()
    cancel = cancel or threading.Event()
    deadline = started + settings.enforce_time_budget_seconds
    report = Report(
        mode="apply" if apply else "report",
        run_id=session.who.get("runId", ""),
        max_changes=settings.enforce_max_changes,
        objects=settings.enforce_objects,
    )
    matched: set[str] = set()
    unlisted: list[str] = []  # kinds whose listing failed: an exclusion meant for them cannot be checked
    if "mailboxes" in settings.enforce_objects:
        assert exchange is not None, "a mailbox sweep needs the Exchange client"
        found = _sweep_mailboxes(exchange, settings, report, apply, session, deadline, progress, cancel)
        matched |= found if found is not None else set()
        unlisted += [] if found is not None else ["mailboxes"]
    stop = StopSignal(cancel, deadline)
    for name in settings.enforce_objects:
        if name == "mailboxes":
            continue
        kind = KINDS[name]
        if stop.check():
            report.kinds.append(not_reached(kind, report.mode, settings.enforce_max_changes, stop.reason))
            report.interrupted = report.interrupted or stop.interrupted
            unlisted.append(name)
            continue
        assert directory is not None, "a group or contact sweep needs the Graph directory"
        part = sweep_kind(
            directory(),
            kind,
            settings,
            apply=apply,
            session=session,
            deadline=deadline,
            cancel=cancel,
            progress=progress,
        )
        report.kinds.append(part.report)
        report.interrupted = report.interrupted or part.report.interrupted
        report.journal_error = report.journal_error or part.journal_error
        matched |= part.matched if part.matched is not None else set()
        unlisted += [] if part.matched is not None else [name]
    _note_unmatched(report, settings.enforce_exclude, matched, unlisted)
    report.duration_seconds = time.monotonic() - started
    log.info("sweep finished: %s", report.to_json())
    return report


def _sweep_mailboxes(
    exchange: ExchangeClient,
    settings: Settings,
    report: Report,
    apply: bool,
    session: Session,
    deadline: float,
    progress: Progress | None,
    cancel: threading.Event,
) -> set[str] | None:
    """The mailboxes' part of a sweep; returns the ENFORCE_EXCLUDE entries that named a listed mailbox, or None
    when the listing did not finish."""
    try:
        report.tenant_default_cloud_managed = read_tenant_default(exchange, deadline)
    except ExoprovError as exc:
        # Information, not a precondition: the sweep goes on without it.
        log.warning("Get-OrganizationConfig failed (%s); the sweep goes on without the tenant default", exc)
        report.notes.append(f"the tenant default could not be read ({first_line(exc)}); the sweep went on")
    try:
        plan = list_and_plan(exchange, settings, deadline, cancel)
    except BudgetExhaustedError as exc:
        report.complete = False
        report.notes.append(f"the listing did not finish within the time budget ({exc}); nothing changed")
        return None
    except Cancelled:
        report.complete, report.interrupted = False, True
        report.notes.append("interrupted during the listing; nothing was changed")
        return None
    if report.tenant_default_cloud_managed:
        report.notes.append("the tenant default is on: newly licensed synced mailboxes are cloud-managed already")
    _copy_counts(plan, report)
    limit = settings.enforce_max_changes
    if limit and len(plan.candidates) > limit:
        report.brake_engaged = True
        report.notes.append(
            f"{len(plan.candidates)} mailboxes would change, more than ENFORCE_MAX_CHANGES={limit}; "
            "nothing was changed. Review the report, then raise the limit or exclude mailboxes"
        )
    elif apply and plan.candidates:
        Applier(exchange, settings, report, deadline, progress, cancel, session).run(plan.candidates)
    return plan.matched_exclusions


def _note_unmatched(report: Report, exclude: frozenset[str], matched: set[str], unlisted: list[str]) -> None:
    """Name the ENFORCE_EXCLUDE entries that matched nothing listed: what they were meant to protect is not, unless
    it is of a kind that could not be listed (the note says which)."""
    report.unmatched_exclusions = sorted(exclude - matched)
    if report.unmatched_exclusions:
        unchecked = f" ({' and '.join(unlisted)} could not be listed: an entry meant for one is among these)"
        report.notes.append(
            f"ENFORCE_EXCLUDE entries that match nothing the sweep listed: {', '.join(report.unmatched_exclusions)}"
            f"{unchecked if unlisted else ''}; check them: the object they were meant for is not protected"
        )


def read_tenant_default(exchange: ExchangeClient, deadline: float | None = None) -> bool | None:
    """Whether the tenant-wide cloud-management default is on; None when the tenant does not say."""
    command = Command("Get-OrganizationConfig", {}, (TENANT_DEFAULT_PROPERTY,))
    try:
        result = exchange.invoke(command, deadline=deadline)
    except (BadRequestError, NotFoundError):
        return None
    if not result.value or TENANT_DEFAULT_PROPERTY not in result.value[0]:
        return None
    return result.value[0][TENANT_DEFAULT_PROPERTY] is True


def intent_groups(batches: int) -> list[tuple[int, int]]:
    """The [first, last) ranges of $batches whose intents are journaled together: 1, 4, 16, then 50 at a time."""
    groups, first = [], 0
    sizes = iter(INTENT_RAMP)
    while first < batches:
        size = next(sizes, INTENT_GROUP_BATCHES)
        groups.append((first, min(first + size, batches)))
        first += size
    return groups


def list_and_plan(
    exchange: ExchangeClient, settings: Settings, deadline: float | None = None, cancel: threading.Event | None = None
) -> Plan:
    """Stream the dir-synced mailboxes page by page into a plan, keeping only what the plan needs."""
    types, exclude = settings.enforce_recipient_types, settings.enforce_exclude
    return list_synced(exchange, Plan, lambda plan, record: plan.add_record(record, types, exclude), deadline, cancel)


def list_synced(
    exchange: ExchangeClient,
    start: Callable[[], T],
    add: Callable[[T, dict[str, Any]], None],
    deadline: float | None = None,
    cancel: threading.Event | None = None,
    command: Command | None = None,
) -> T:
    """Fold every dir-synced mailbox (or what `command` lists) into `start()`, streamed page by page.

    A continuation link lives minutes and dies with a lost answer: a page that cannot be had after the
    first one starts the listing again from the top (at most LISTING_RESTARTS times) from a fresh `start()`,
    so the result is that of one complete listing. Raises Cancelled when `cancel` is set.
    """
    command = command or Command("Get-Mailbox", {"Filter": DIR_SYNCED_FILTER, "ResultSize": "Unlimited"}, LIST_SELECT)
    for restart in range(LISTING_RESTARTS + 1):
        folded, pages = start(), 0
        try:
            for page in exchange.pages(command, deadline=deadline):
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                pages += 1
                for record in page:
                    add(folded, record)
            return folded
        except BudgetExhaustedError:
            raise
        except (BadRequestError, TransientError) as exc:
            if pages == 0 or restart == LISTING_RESTARTS:
                raise
            log.warning(
                "the listing lost its place after %d page(s) (%s); starting it again (%d of %d)",
                pages,
                first_line(exc),
                restart + 1,
                LISTING_RESTARTS,
            )
    raise AssertionError("unreachable")


def _copy_counts(plan: Plan, report: Report) -> None:
    report.candidate_list = [m.to_json() for m in plan.candidates]
    report.scanned = plan.scanned
    report.dir_synced = plan.dir_synced
    report.already_cloud_managed = plan.already_cloud_managed
    report.out_of_scope = plan.out_of_scope
    report.excluded = plan.excluded
    report.candidates = len(plan.candidates)


class Applier:
    """Sets IsExchangeCloudManaged to `value` on mailboxes, in $batches of 10 with at most
    `enforce_concurrency` batches in flight, each write journaled before it is sent and verified after."""

    def __init__(
        self,
        exchange: ExchangeClient,
        settings: Settings,
        report: Report,
        deadline: float,
        progress: Progress | None,
        cancel: threading.Event,
        session: Session,
        value: bool = True,
    ) -> None:
        self._exchange = exchange
        self._settings = settings
        self._report = report
        self._deadline = deadline
        self._progress = progress
        self._session = session
        self._value = value
        self._lock = threading.Lock()
        self._stop = StopSignal(cancel, deadline)
        self._done = 0
        self._intents: dict[int, Entry] = {}  # by id() of the ListedMailbox: a listing may repeat an identity

    def run(self, candidates: list[ListedMailbox]) -> None:
        chunks = [candidates[i : i + BATCH_LIMIT] for i in range(0, len(candidates), BATCH_LIMIT)]
        groups = intent_groups(len(chunks))
        group_of = [g for g, (first, last) in enumerate(groups) for _ in range(first, last)]
        intents: dict[int, Future[bool]] = {}
        in_flight: set[Future[None]] = set()
        sent = 0

        def write_ahead(group: int) -> None:
            # Intents go out one group ahead of the writes, on a thread of their own, so the journal's appends
            # overlap the batches instead of holding them up; only the first, smallest group is waited for.
            if group < len(groups) and group not in intents:
                first, last = groups[group]
                intents[group] = journal.submit(contextvars.copy_context().run, self._intend, chunks[first:last])

        with (
            ThreadPoolExecutor(self._settings.enforce_concurrency, "exoprov-sweep") as pool,
            ThreadPoolExecutor(1, "exoprov-journal") as journal,
        ):
            for index, chunk in enumerate(chunks):
                while len(in_flight) >= self._settings.enforce_concurrency:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    self._reraise(finished)
                write_ahead(group_of[index])
                if self._stop.check() or not intents[group_of[index]].result():
                    break
                write_ahead(group_of[index] + 1)
                # Each batch runs in a copy of this context, so its log lines carry the run's correlation id.
                in_flight.add(pool.submit(contextvars.copy_context().run, self._flip, chunk))
                sent = index + 1
            journal.shutdown(wait=True)  # an intent written ahead for a batch never sent is withdrawn below
            self._skip([mailbox for rest in chunks[sent:] for mailbox in rest])
            finished, _ = wait(in_flight)
            self._reraise(finished)
        self._stop.settle(self._report)

    def _intend(self, chunks: list[list[ListedMailbox]]) -> bool:
        """Journal the intents of the next batches; without them nothing more is written."""
        entries = {
            id(m): self._session.entry(CLOUD_MANAGED, m.identity, m.label, not self._value, self._value)
            for chunk in chunks
            for m in chunk
        }
        try:
            self._session.intend(entries.values())
        except JournalUnavailableError as exc:
            log.error("%s; no more mailboxes are changed", exc)
            self._report.journal_error = str(exc)
            self._stop.set(f"stopped: {exc}; nothing is changed without a journal entry")
            return False
        with self._lock:
            self._intents.update(entries)
        return True

    def _skip(self, mailboxes: list[ListedMailbox]) -> None:
        """Count mailboxes as not attempted; intents already journaled for them are withdrawn."""
        with self._lock:
            self._report.not_attempted += len(mailboxes)
            withdrawn = [self._intents.pop(id(m)).entry_id for m in mailboxes if id(m) in self._intents]
        self._session.withdraw(withdrawn)

    def _flip(self, chunk: list[ListedMailbox]) -> None:
        """Write one chunk, settle unclear items by reading back, and retry what provably did not apply."""
        # A mailbox is written again only when it provably was not changed (throttled, or read back
        # unchanged), at most as often as any single call may be tried (HTTP_MAX_ATTEMPTS).
        attempts = self._settings.http_max_attempts
        pending = list(chunk)
        for attempt in range(1, attempts + 1):
            if self._stop.check():
                self._give_up(pending, sent=attempt > 1)
                return
            unclear, pending = self._write(pending, last=attempt == attempts, sent=attempt > 1)
            if unclear:
                pending += self._settle(unclear)
            if not pending:
                return
        for mailbox in pending:
            self._fail(mailbox, f"the write did not apply after {attempts} attempts (HTTP_MAX_ATTEMPTS)")

    def _give_up(self, mailboxes: list[ListedMailbox], *, sent: bool) -> None:
        """The run stops: mailboxes never written are not attempted; those written before, without effect, failed."""
        if not sent:
            self._skip(mailboxes)
            return
        for mailbox in mailboxes:
            self._fail(
                mailbox, "it did not apply (throttled, or read back unchanged) and the run stopped before writing again"
            )

    def _write(
        self, chunk: list[ListedMailbox], *, last: bool, sent: bool
    ) -> tuple[list[ListedMailbox], list[ListedMailbox]]:
        """Send one $batch (`sent`: its mailboxes were written before, without effect); return (unclear, retry)."""
        value = self._value
        commands = [Command("Set-Mailbox", {"Identity": m.identity, "IsExchangeCloudManaged": value}) for m in chunk]
        try:
            outcomes = self._exchange.batch(commands, deadline=self._deadline)
        except OutcomeUnknownError:
            return list(chunk), []
        except BudgetExhaustedError:
            self._stop.set(BUDGET_NOTE)
            self._give_up(chunk, sent=sent)
            return [], []
        except PermissionDeniedError as exc:
            self._stop.set(f"stopped: {exc}")
            for mailbox in chunk:
                self._fail(mailbox, str(exc))
            return [], []
        except ExoprovError as exc:
            for mailbox in chunk:
                self._fail(mailbox, str(exc))
            return [], []
        unclear, retry = [], []
        for mailbox, outcome in zip(chunk, outcomes, strict=True):
            error = outcome.error
            if error is None:
                self._succeed(mailbox, noop=outcome.result is not None and outcome.result.unchanged)
            elif isinstance(error, OutcomeUnknownError):
                unclear.append(mailbox)
            elif isinstance(error, ThrottledError) and not last:
                retry.append(mailbox)
            else:
                self._fail(mailbox, str(error))
        return unclear, retry

    def _settle(self, unclear: list[ListedMailbox]) -> list[ListedMailbox]:
        """Read unclear mailboxes back; count the flipped ones, return those that provably did not flip."""
        commands = [Command("Get-Mailbox", {"Identity": m.identity}, ("IsExchangeCloudManaged",)) for m in unclear]
        try:
            outcomes = self._exchange.batch(commands, deadline=self._deadline)
        except ExoprovError as exc:
            for mailbox in unclear:
                self._unknown(mailbox, f"the write's outcome is unknown and reading it back failed: {exc}")
            return []
        not_applied = []
        for mailbox, outcome in zip(unclear, outcomes, strict=True):
            if outcome.error is not None:
                self._unknown(mailbox, f"the write's outcome is unknown and reading it back failed: {outcome.error}")
            elif (
                outcome.result
                and outcome.result.value
                and outcome.result.value[0].get("IsExchangeCloudManaged") is self._value
            ):
                self._succeed(mailbox)
            else:
                log.info("read-back shows %s unchanged; writing again", mailbox.label)
                not_applied.append(mailbox)
        return not_applied

    def _succeed(self, mailbox: ListedMailbox, *, noop: bool = False) -> None:
        audit(CLOUD_MANAGED, mailbox.label, not self._value, self._value, noop=noop)
        self._record(mailbox, "noop" if noop else "applied")
        with self._lock:
            self._report.changed += 1
            self._done += 1
            done = self._done
        self._tick(done)

    def _fail(self, mailbox: ListedMailbox, message: str) -> None:
        log.warning("could not set %s cloud-managed %s: %s", mailbox.label, self._value, message)
        self._settled(mailbox, message, unknown=False)

    def _unknown(self, mailbox: ListedMailbox, message: str) -> None:
        """The write may have applied; the next run's listing settles it, so it is neither changed nor failed."""
        log.warning("%s may or may not be cloud-managed %s now: %s", mailbox.label, self._value, message)
        self._settled(mailbox, message, unknown=True)

    def _settled(self, mailbox: ListedMailbox, message: str, *, unknown: bool) -> None:
        self._record(mailbox, "unknown" if unknown else "failed", message)
        entry = {"identity": mailbox.label, "error": message}
        with self._lock:
            if unknown:
                self._report.unknown += 1
                self._report.unknowns.append(entry)
            else:
                self._report.failed += 1
                self._report.failures.append(entry)
            self._done += 1
            done = self._done
        self._tick(done)

    def _record(self, mailbox: ListedMailbox, outcome: str, error: str | None = None) -> None:
        with self._lock:
            intent = self._intents.pop(id(mailbox))
        self._session.record(intent.entry_id, outcome, error)

    def _tick(self, done: int) -> None:
        if self._progress:
            self._progress(done, self._report.candidates)

    @staticmethod
    def _reraise(finished: set[Future[None]]) -> None:
        for future in finished:
            future.result()
