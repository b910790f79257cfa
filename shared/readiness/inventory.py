"""What the report reads from the tenant, in the few fields each check needs, parsed from the wire records.

Parsing is tolerant on purpose: a field the service leaves out reads as "unknown" (None) or empty, never as a
convenient default that could make a check pass (docs/wire-protocols.md, "Readiness reads").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.enforcement import exclusion_keys
from shared.graph import Sku
from shared.mailbox_rules import has_archive

__all__ = [
    "ZERO_GUID",
    "missing",
    "DirectoryObject",
    "Inventory",
    "MailUserFacts",
    "MailboxFacts",
    "OrgFacts",
    "UserFacts",
]

ZERO_GUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True, slots=True)
class MailboxFacts:
    """One mailbox from Get-Mailbox."""

    id: str
    upn: str
    name: str
    primary_smtp: str
    recipient_type: str
    dir_synced: bool
    cloud_managed: bool
    archive: bool
    holds: tuple[str, ...]
    exclusion_keys: frozenset[str]
    hold_exclusions: frozenset[str] = frozenset()  # org-wide policies this mailbox is excluded from (-mbx<guid>)

    # Without these a mailbox cannot be judged: the listing is refused rather than read as "not synced".
    REQUIRED = ("ExternalDirectoryObjectId", "IsDirSynced", "IsExchangeCloudManaged", "RecipientTypeDetails")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MailboxFacts:
        upn = str(record.get("UserPrincipalName") or "")
        entries = [str(hold) for hold in record.get("InPlaceHolds") or [] if hold]
        holds = [hold for hold in entries if not hold.startswith("-")]
        if record.get("LitigationHoldEnabled") is True:
            holds.insert(0, "litigation hold")
        if record.get("ComplianceTagHoldApplied") is True:
            holds.append("retention label hold")
        if record.get("DelayHoldApplied") is True:
            holds.append("delay hold")
        needs_sweep = record.get("IsDirSynced") is True and record.get("IsExchangeCloudManaged") is not True
        return cls(
            id=str(record["ExternalDirectoryObjectId"]).lower(),
            upn=upn,
            name=str(record.get("DisplayName") or upn),
            primary_smtp=str(record.get("PrimarySmtpAddress") or ""),
            recipient_type=str(record.get("RecipientTypeDetails") or ""),
            dir_synced=record.get("IsDirSynced") is True,
            cloud_managed=record.get("IsExchangeCloudManaged") is True,
            archive=has_archive(record),
            holds=tuple(holds),
            # Only a mailbox the sweep still has to flip is matched against ENFORCE_EXCLUDE: keep the others small.
            exclusion_keys=exclusion_keys(record) if needs_sweep else frozenset(),
            hold_exclusions=frozenset(_policy(hold[1:]) for hold in entries if hold.startswith("-")),
        )

    def license_needed(self, org_holds: tuple[str, ...]) -> str | None:
        """Why a shared mailbox keeps its license whatever its size: an archive or a hold (B25); None if neither."""
        if self.archive:
            return "archive"
        if self.holds:
            return self.holds[0]
        applying = [hold for hold in org_holds if _policy(hold) not in self.hold_exclusions]
        return f"organization-wide retention policy {applying[0]}" if applying else None

    @property
    def label(self) -> str:
        return self.upn or self.primary_smtp or self.id


def _policy(hold: str) -> str:
    """The policy of a hold entry: mbx<guid>:2 and -mbx<guid> both name policy mbx<guid>."""
    return hold.split(":", 1)[0].lower()


def missing(record: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """The names the record lacks (absent or null)."""
    return [name for name in names if record.get(name) is None]


@dataclass(frozen=True, slots=True)
class MailUserFacts:
    """One dir-synced mail user from Get-MailUser."""

    id: str
    name: str
    primary_smtp: str
    exchange_guid: str

    REQUIRED = ("ExternalDirectoryObjectId", "ExchangeGuid")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MailUserFacts:
        upn = str(record.get("UserPrincipalName") or "")
        return cls(
            id=str(record["ExternalDirectoryObjectId"]).lower(),
            name=str(record.get("DisplayName") or upn),
            primary_smtp=str(record.get("PrimarySmtpAddress") or ""),
            exchange_guid=str(record.get("ExchangeGuid") or ZERO_GUID).lower(),
        )

    @property
    def has_mailbox_guid(self) -> bool:
        """A remote mailbox carries the GUID of its mailbox; a plain mail user has the zero GUID."""
        return self.exchange_guid != ZERO_GUID


@dataclass(frozen=True, slots=True)
class UserFacts:
    """One Entra user from Graph: its mail and the SKUs assigned to it, with their disabled plans."""

    id: str
    upn: str
    mail: str | None
    licenses: tuple[tuple[str, frozenset[str]], ...]  # (skuId, disabled plan ids)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserFacts:
        licenses = tuple(
            (str(item["skuId"]).lower(), frozenset(str(plan).lower() for plan in item.get("disabledPlans") or []))
            for item in data.get("assignedLicenses") or []
            if isinstance(item, dict) and item.get("skuId")
        )
        return cls(
            str(data["id"]).lower(), str(data.get("userPrincipalName") or ""), data.get("mail") or None, licenses
        )

    def exchange_skus(self, skus: dict[str, Sku]) -> list[Sku]:
        """The assigned SKUs that give this user an Exchange Online plan that is not disabled."""
        found = []
        for sku_id, disabled in self.licenses:
            sku = skus.get(sku_id)
            if sku and any(plan.lower() not in disabled for plan in sku.exchange_plans):
                found.append(sku)
        return found


@dataclass(frozen=True, slots=True)
class DirectoryObject:
    """A dir-synced group or org contact from Graph, with its source of authority once read."""

    id: str
    name: str
    mail: str | None
    kind: str  # "distribution group", "mail-enabled security group", "security group", "contact"
    cloud_managed: bool | None = None  # None: not read (no role for it, or the read failed)
    child_groups: tuple[str, ...] = ()  # ids of the groups that are direct members
    children_read: bool = True  # False: its member groups could not be read, so the order may be incomplete

    @property
    def mail_enabled(self) -> bool:
        return self.kind != "security group"


@dataclass(frozen=True)
class OrgFacts:
    """The tenant-wide default and the leftovers of a hybrid configuration, as Findings-to-be."""

    default_cloud_managed: bool | None
    hybrid: tuple[tuple[str, str, str], ...] = ()  # (kind, identity, detail)
    retention_holds: tuple[str, ...] = ()  # organization-wide retention policies: they hold every mailbox


@dataclass
class Inventory:
    """Everything the checks look at; `errors` names each part that could not be read, and why."""

    mailboxes: list[MailboxFacts] = field(default_factory=list)
    mail_users: list[MailUserFacts] = field(default_factory=list)
    users: dict[str, UserFacts] = field(default_factory=dict)
    skus: dict[str, Sku] = field(default_factory=dict)
    groups: list[DirectoryObject] = field(default_factory=list)
    contacts: list[DirectoryObject] = field(default_factory=list)
    org: OrgFacts | None = None
    sizes: dict[str, int | None] = field(default_factory=dict)  # mailbox id -> TotalItemSize bytes (None: unread)
    state_read: bool = True  # False: the source-of-authority state was not read (no role for it)
    errors: dict[str, str] = field(default_factory=dict)  # part -> message
