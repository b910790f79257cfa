"""The sandbox's knobs (latency, limits, fault rates) and what it counts while serving."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sandbox.tokens import DEFAULT_ROLES, GRAPH_RESOURCE

# The least privileged roles of the readiness report's Graph reads (docs/wire-protocols.md), granted by default so
# that the sandbox app can run the report. Reading a source of authority has no Read.All role: it takes ReadWrite.
READINESS_GRAPH_ROLES = (
    "GroupMember.Read.All",
    "OrgContact.Read.All",
    "Group-OnPremisesSyncBehavior.ReadWrite.All",
    "Contacts-OnPremisesSyncBehavior.ReadWrite.All",
)


def _default_roles() -> dict[str, list[str]]:
    roles = {resource: list(names) for resource, names in DEFAULT_ROLES.items()}
    roles[GRAPH_RESOURCE] = [*roles.get(GRAPH_RESOURCE, []), *READINESS_GRAPH_ROLES]
    return roles


@dataclass
class Knobs:
    """Everything a test or benchmark may turn; all durations in seconds, rates in 0..1."""

    latency: float = 0.0
    concurrency_limit: int = 0  # Exchange requests in flight per tenant; 0 = unlimited
    # No public capture shows the refusal's status or a Retry-After (only its text): by default the
    # inconvenient guess, a plain-text 400 without Retry-After, so the client must back off on its own.
    concurrency_refusal_status: int = 400
    concurrency_retry_after: bool = False
    requests_per_second: float = 0.0  # Exchange request rate; 0 = unlimited
    retry_after: float = 1.0  # what a throttling answer asks for
    omit_retry_after: bool = False  # throttle without saying how long (the client must back off by itself)
    fault_503_rate: float = 0.0  # 503 without Retry-After, nothing done
    fault_429_rate: float = 0.0  # 429 with Retry-After, nothing done
    fault_504_rate: float = 0.0  # 504 gateway timeout after the work was done
    fault_item_429_rate: float = 0.0  # a $batch item answered 429 with Retry-After, nothing done
    fault_read_item_429_rate: float = 0.0  # the same for a Get- item of a $batch (the readiness report's reads)
    fault_empty_error_rate: float = 0.0  # a write is applied, then answered with an empty error
    fault_hang_rate: float = 0.0  # answer only after `hang_seconds`
    hang_seconds: float = 30.0
    fault_drop_rate: float = 0.0  # close the connection without an answer (after applying)
    token_fault_rate: float = 0.0  # the identity endpoint fails
    token_outage_seconds: float = 0.0  # the identity endpoint fails for this long from when the knob is set
    token_lifetime: float = 3600.0
    nextlink_ttl: float = 300.0
    nextlink_origin: str = ""  # a fault: nextLinks point at this scheme://host instead of the sandbox
    page_size_cap: int = 1000  # the most rows a page holds, whatever odata.maxpagesize asks (many pages)
    fault_lost_pages: list[int] = field(default_factory=list)  # these continuations (1st, 2nd...) lose their answer
    fault_readback_rate: float = 0.0  # a Get-Mailbox -Identity inside a $batch answers 503
    batch_limit: int = 20
    conversion_lag: float = 0.0
    mailbox_delay: float = 0.0  # licence assigned -> mailbox appears
    # Entra replication: a Graph write (usageLocation, licenses) shows in reads this much later, and a user
    # that reads return is unknown to writes for as long. On by default: the chain must never assume otherwise.
    replication_lag: float = 1.5
    graph_fault_429_rate: float = 0.0
    graph_fault_503_rate: float = 0.0
    # A Graph $batch item answered 429 with its own Retry-After while the batch itself answers 200.
    graph_batch_item_429_rate: float = 0.0
    # A write item of a Graph $batch applied, then answered 503 without Retry-After: the client cannot know the outcome.
    graph_batch_item_503_after_write_rate: float = 0.0
    # onPremisesSyncBehavior answered in the shape of Learn's example ({"value": {...}}) instead of a plain entity.
    graph_sync_behavior_wrapped: bool = False
    # PATCH onPremisesSyncBehavior answered 200 with the entity (an earlier version of Learn's page) instead of 204.
    graph_sync_behavior_patch_200: bool = False
    # For this long after a PATCH, reads of onPremisesSyncBehavior still show the value from before it. Third-party
    # scripts re-read up to 6 x 2 s; nothing documents a lag, so it is off by default.
    authority_read_lag: float = 0.0
    # A rollback of a source of authority completes at the next sync cycle, this long after the PATCH (Connect
    # Sync runs every 30 minutes; short here so that tests can watch it, or call SandboxControl.resync()).
    # Names of groups or contacts whose onPremisesSyncBehavior PATCH is refused (400): one object that fails.
    authority_refused: list[str] = field(default_factory=list)
    # Names of groups whose members listing answers 503 (one group the client cannot read through).
    members_unreadable: list[str] = field(default_factory=list)
    sync_cycle_seconds: float = 30.0
    seed: int = 7
    denied_cmdlets: list[str] = field(default_factory=list)  # outside the identity's Exchange RBAC: 403
    roles: dict[str, list[str]] = field(default_factory=_default_roles)

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in values.items():
            if key not in names:
                raise ValueError(f"unknown knob {key!r}; known: {', '.join(sorted(names))}")
            setattr(self, key, value)


class Stats:
    """Counts of what was served, for tests and benchmarks; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self.identities: Counter[str] = Counter()  # every Identity parameter Exchange was sent
        self.filters: Counter[str] = Counter()  # every Filter parameter Exchange was sent
        self.graph_calls: Counter[str] = Counter()  # every Graph call and $batch item: "read: GET groups", "write: ..."
        self.throttled = 0
        self.retry_after_violations: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._blocked_until: dict[str, float] = {}

    def count(self, counter: str, key: Any, amount: int = 1) -> None:
        with self.lock:
            getattr(self, counter)[key] += amount

    def remember_retry_after(self, request_id: str, seconds: float) -> None:
        """A throttled call must not come back (same client-request-id) before `seconds` pass."""
        if request_id:
            with self.lock:
                self._blocked_until[request_id] = time.monotonic() + seconds

    def check_retry_after(self, request_id: str) -> None:
        if not request_id:
            return
        with self.lock:
            until = self._blocked_until.get(request_id)
            # 5 ms of slack for clock granularity between two processes on one machine.
            if until is not None and time.monotonic() < until - 0.005:
                self.retry_after_violations.append(
                    {"clientRequestId": request_id, "earlyBySeconds": round(until - time.monotonic(), 4)}
                )

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "requestsTotal": sum(self.requests.values()),
                "commands": dict(self.commands),
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "faults": dict(self.faults),
                "tokens": dict(self.tokens),
                "identities": dict(self.identities),
                "filters": dict(self.filters),
                "graphCalls": dict(self.graph_calls),
                # Graph writes of any kind, $batch items included: a read-only run must leave this at 0.
                "graphWrites": sum(n for key, n in self.graph_calls.items() if key.startswith("write: ")),
                "throttled": self.throttled,
                "retryAfterViolations": list(self.retry_after_violations),
                "maxInFlight": self.max_in_flight,
                "inFlight": self.in_flight,
            }


class Limiter:
    """Decides, per request, whether the tenant's concurrency or rate limit refuses it."""

    def __init__(self, knobs: Knobs, stats: Stats) -> None:
        self.knobs = knobs
        self.stats = stats
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._refilled = time.monotonic()

    def enter(self) -> float | None:
        """Admit a request (None) or return the Retry-After to refuse it with."""
        with self._lock:
            limit = self.knobs.concurrency_limit
            if limit and self.stats.in_flight >= limit:
                return self.knobs.retry_after
            rate = self.knobs.requests_per_second
            if rate:
                now = time.monotonic()
                self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
                self._refilled = now
                if self._tokens < 1:
                    return max(self.knobs.retry_after, (1 - self._tokens) / rate)
                self._tokens -= 1
            with self.stats.lock:
                self.stats.in_flight += 1
                self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            return None

    def leave(self) -> None:
        with self.stats.lock:
            self.stats.in_flight -= 1


class Dice:
    """Seeded fault decisions, so that a fault test is repeatable."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate


def knobs_json(knobs: Knobs) -> dict[str, Any]:
    return asdict(knobs)
