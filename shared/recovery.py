"""Settling what a crash left in the journal: intents without an outcome are read back from the tenant.

A sweep or undo run settles the runs whose process is gone before it starts; a chain step settles the earlier
deliveries of its own request (it holds the request's lease, so no other delivery is alive). Reading back
decides: the object shows the value written (`applied`), or it does not (`failed`: the write never took effect,
or was never sent), or the read cannot say (`unknown`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.authority.objects import KINDS, Kind
from shared.authority.read import read_states
from shared.directory import GraphDirectory
from shared.errors import ExoprovError, NotFoundError, TransientError, first_line
from shared.exchange import BATCH_LIMIT, Command, ExchangeClient
from shared.graph import GraphClient
from shared.journal import Entry, Journal, SessionInfo, settlement_line

__all__ = [
    "CLOUD_MANAGED",
    "LICENSE_ADD",
    "LICENSE_REMOVE",
    "MAILBOX_TYPE",
    "USAGE_LOCATION",
    "settle_request",
    "settle_runs",
]

log = logging.getLogger("exoprov.recovery")

CLOUD_MANAGED = "Set-Mailbox -IsExchangeCloudManaged"
MAILBOX_TYPE = "Set-Mailbox -Type"
LICENSE_ADD = "license.add"
LICENSE_REMOVE = "license.remove"
USAGE_LOCATION = "usageLocation"
TYPE_DETAILS = {"Shared": "SharedMailbox", "Room": "RoomMailbox", "Equipment": "EquipmentMailbox"}
# A run whose process runs elsewhere is taken for dead after this much silence: longer than any wait of
# its own (Retry-After is capped well below it), so a live run is not settled under its feet.
STALE_AFTER_SECONDS = 600.0
AUTHORITY_ACTIONS = frozenset(kind.action for kind in KINDS.values())
NOT_APPLIED = "not applied: the run ended before recording an outcome, and the object reads {}"

# (outcome, error), in the order settlement_line takes them: a read-back is written as it is.
ReadBack = tuple[str, str | None]


@dataclass
class Settlement:
    """What a settling pass did: sessions closed, entries settled by outcome, sessions left to their owner."""

    sessions: int = 0
    entries: dict[str, int] = field(default_factory=dict)
    left_open: list[str] = field(default_factory=list)
    retry_later: int = 0

    @property
    def settled(self) -> int:
        return sum(self.entries.values())

    def note(self) -> str | None:
        """One sentence for a report, or None when there was nothing to settle."""
        if not self.sessions and not self.left_open and not self.entries and not self.retry_later:
            return None
        counts = ", ".join(f"{n} {o}" for o, n in sorted(self.entries.items())) or "no pending entries"
        text = f"settled {self.settled} journal entries left by {self.sessions} interrupted run(s) ({counts})"
        if self.left_open:
            text += f"; {len(self.left_open)} run(s) still look alive and were left to their owner"
        if self.retry_later:
            text += f"; {self.retry_later} could not be read back now and wait for the next run"
        return text


def settle_runs(
    journal: Journal, exchange: Callable[[], ExchangeClient], graph: Callable[[], GraphClient], by: str
) -> Settlement:
    """Settle every open run session whose process is gone."""
    settlement = Settlement()
    for info in journal.sessions("runs/"):
        if info.state != "open":
            continue
        if not info.owner_gone(STALE_AFTER_SECONDS):
            settlement.left_open.append(info.name)
            continue
        _settle(journal, info, exchange, graph, by, settlement)
    return settlement


def settle_request(
    journal: Journal,
    request_id: str,
    exchange: Callable[[], ExchangeClient],
    graph: Callable[[], GraphClient],
    by: str,
) -> Settlement:
    """Settle a request's open sessions; the caller holds the request's lease, so their owners are gone."""
    from shared.journal import request_prefix

    settlement = Settlement()
    for info in journal.sessions(request_prefix(request_id)):
        if info.state == "open":
            _settle(journal, info, exchange, graph, by, settlement)
    return settlement


def _settle(
    journal: Journal,
    info: SessionInfo,
    exchange: Callable[[], ExchangeClient],
    graph: Callable[[], GraphClient],
    by: str,
    settlement: Settlement,
) -> None:
    pending = [e for e in journal.read_session(info.name) if e.outcome == "pending"]
    verdicts = read_back(pending, exchange, graph)
    lines = [settlement_line(e.entry_id, *verdicts[e.entry_id], by) for e in pending if e.entry_id in verdicts]
    if lines:
        journal.append(info.name, lines)
    for outcome, _ in verdicts.values():
        settlement.entries[outcome] = settlement.entries.get(outcome, 0) + 1
    if len(verdicts) < len(pending):
        # A read that may succeed later (throttled, a 5xx): those entries wait for the next run.
        settlement.retry_later += len(pending) - len(verdicts)
        log.warning(
            "journal: settled %d of %d pending entries of %s; the rest could not be read back now",
            len(lines),
            len(pending),
            info.name,
        )
        return
    journal.set_state(info.name, info.metadata, "closed")
    settlement.sessions += 1
    log.warning("journal: settled %d pending entries of %s (its process is gone)", len(lines), info.name)


def read_back(
    entries: list[Entry], exchange: Callable[[], ExchangeClient], graph: Callable[[], GraphClient]
) -> dict[str, ReadBack]:
    """How each write ended, from the object as the tenant shows it now; an entry whose read failed for now
    (throttled, a 5xx) has no verdict, so that a later run reads it again."""
    verdicts: dict[str, ReadBack] = {}
    mailboxes = [e for e in entries if e.action in (CLOUD_MANAGED, MAILBOX_TYPE)]
    for start in range(0, len(mailboxes), BATCH_LIMIT):
        verdicts.update(_read_mailboxes(mailboxes[start : start + BATCH_LIMIT], exchange()))
    for kind in KINDS.values():
        converted = [e for e in entries if e.action == kind.action]
        if converted:
            verdicts.update(_read_sources(converted, kind, GraphDirectory(graph().http)))
    for entry in entries:
        if entry.action in AUTHORITY_ACTIONS:
            continue
        if entry.action in (LICENSE_ADD, LICENSE_REMOVE, USAGE_LOCATION):
            verdict = _read_user(entry, graph())
            if verdict is not None:
                verdicts[entry.entry_id] = verdict
        elif entry.action not in (CLOUD_MANAGED, MAILBOX_TYPE):
            verdicts[entry.entry_id] = ("unknown", f"exoprov cannot read back {entry.action!r}")
    return verdicts


def _read_mailboxes(entries: list[Entry], exchange: ExchangeClient) -> dict[str, ReadBack]:
    select = ("IsExchangeCloudManaged", "RecipientTypeDetails")
    commands = [Command("Get-Mailbox", {"Identity": e.target_id}, select) for e in entries]
    try:
        outcomes = exchange.batch(commands)
    except TransientError:
        return {}
    except ExoprovError as exc:
        return {e.entry_id: ("unknown", f"reading it back failed: {first_line(exc)}") for e in entries}
    verdicts: dict[str, ReadBack] = {}
    for entry, outcome in zip(entries, outcomes, strict=True):
        if isinstance(outcome.error, TransientError):
            continue
        if outcome.error is not None or outcome.result is None or not outcome.result.value:
            why = first_line(outcome.error) if outcome.error else "no object came back"
            verdicts[entry.entry_id] = ("unknown", f"reading it back failed: {why}")
            continue
        box = outcome.result.value[0]
        if entry.action == CLOUD_MANAGED:
            shows = box.get("IsExchangeCloudManaged")
            verdicts[entry.entry_id] = (
                ("applied", None) if shows == entry.after else ("failed", NOT_APPLIED.format(shows))
            )
        else:
            shows = box.get("RecipientTypeDetails")
            wanted = TYPE_DETAILS.get(str(entry.after), str(entry.after))
            # B13: a conversion shows after a while, so an old type proves nothing either way.
            verdicts[entry.entry_id] = (
                ("applied", None) if shows == wanted else ("unknown", f"the mailbox still reads {shows}")
            )
    return verdicts


def _read_sources(entries: list[Entry], kind: Kind, directory: GraphDirectory) -> dict[str, ReadBack]:
    """Group and contact conversions, read back in batches of 20. A read that does not show the value written
    is `unknown`, not `failed`: Entra replicas lag, and undo reads such an entry again before it acts."""
    shows = read_states(directory, kind, sorted({e.target_id for e in entries}))
    verdicts: dict[str, ReadBack] = {}
    for entry in entries:
        value = shows[entry.target_id]
        if isinstance(value, TransientError):
            continue  # throttled or a 5xx: the next run reads it again
        if isinstance(value, ExoprovError):
            verdicts[entry.entry_id] = ("unknown", f"reading it back failed: {first_line(value)}")
        elif value is entry.after:
            verdicts[entry.entry_id] = ("applied", None)
        else:
            verdicts[entry.entry_id] = (
                "unknown",
                f"reads isCloudManaged {value} (the write never went out, or a replica lags)",
            )
    return verdicts


def _read_user(entry: Entry, graph: GraphClient) -> ReadBack | None:
    try:
        user = graph.get_user(entry.target_id)
    except TransientError:
        return None
    except ExoprovError as exc:
        return "unknown", f"reading it back failed: {first_line(exc)}"
    if user is None:
        return "unknown", str(NotFoundError(f"{entry.target} is gone from Entra ID"))
    if entry.action == USAGE_LOCATION:
        shows: object = user.usage_location
        done = shows == entry.after
    else:
        changed = set(entry.after or []) ^ set(entry.before or [])
        shows = sorted(user.licenses)
        done = changed <= set(user.licenses) if entry.action == LICENSE_ADD else not changed & set(user.licenses)
    if done:
        return "applied", None
    # Entra replicas lag behind a write by seconds: a read that does not show it yet cannot say "failed".
    return "unknown", f"reads show {shows} (Entra replication can lag; the request's later steps verify it)"
