"""The readiness report as data: checks with their findings, the inventory chart, and the JSON document.

The document is a public contract (docs/contracts.md, "Readiness report"): the HTML page, the CSV files,
the CLI table and the blobs the timer writes are all drawn from `ReadinessReport.to_json()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "CHECK_IDS",
    "STATUSES",
    "Check",
    "Finding",
    "ReadinessReport",
    "Status",
    "Tally",
]

Status = Literal["pass", "warn", "fail", "manual"]
STATUSES: tuple[Status, ...] = ("fail", "warn", "manual", "pass")  # worst first: the order a reader needs them
# The fixed ids, in the order the report shows them; a test keeps checks.py and docs/contracts.md to this list.
CHECK_IDS = (
    "mailboxes-not-cloud-managed",
    "tenant-default",
    "synced-mail-users",
    "synced-contacts",
    "synced-groups",
    "unlicensed-user-mailboxes",
    "licensed-shared-mailboxes",
    "primary-address-drift",
    "hybrid-configuration",
    "sync-client-version",
)


@dataclass(frozen=True)
class Finding:
    """One object a check is about: its directory id (or Exchange identity), a name to recognise it by, why."""

    id: str
    name: str
    kind: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True)
class Check:
    """The answer to one question of the report; `error` says why it could not be answered (status `manual`)."""

    id: str
    title: str
    status: Status
    objects: tuple[Finding, ...]
    advice: str
    error: str | None = None

    @property
    def count(self) -> int:
        return len(self.objects)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "count": self.count,
            "objects": [finding.to_json() for finding in self.objects],
            "advice": self.advice,
            "error": self.error,
        }


@dataclass(frozen=True)
class Tally:
    """How many objects of one kind are managed where: the chart's one bar."""

    kind: str
    cloud_managed: int
    on_premises: int
    cloud_only: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cloudManaged": self.cloud_managed,
            "onPremises": self.on_premises,
            "cloudOnly": self.cloud_only,
        }


@dataclass(frozen=True)
class ReadinessReport:
    """Every check, in CHECK_IDS order, with what the report cost in requests."""

    generated_at: datetime
    tenant_id: str
    checks: tuple[Check, ...]
    inventory: tuple[Tally, ...] = ()
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """No check fails, and every check could be answered (an unreadable one proves nothing)."""
        return all(check.status != "fail" and check.error is None for check in self.checks)

    @property
    def summary(self) -> dict[str, int]:
        return {status: sum(1 for check in self.checks if check.status == status) for status in STATUSES}

    def check(self, check_id: str) -> Check:
        return next(check for check in self.checks if check.id == check_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "generatedAt": self.generated_at.isoformat().replace("+00:00", "Z"),
            "tenantId": self.tenant_id,
            "ready": self.ready,
            "summary": self.summary,
            "checks": [check.to_json() for check in self.checks],
            "inventory": [tally.to_json() for tally in self.inventory],
            "requests": dict(self.requests),
        }
