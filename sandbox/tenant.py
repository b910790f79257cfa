"""The sandbox tenant's state and the Exchange cmdlets over it, following rules B1-B23, B29 and B30.

Entra objects (users, contacts, groups) are the source; what Exchange shows is derived from them
the way docs/exchange-behaviour.md describes: a synced user is always a `User` (B1), a mailbox
exists only once an Exchange plan is licensed (B2), addresses follow `mail` (B3-B5), and so on.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.opath import FilterError, Predicate, compile_filter

Answer = tuple[Iterable[dict[str, Any]], list[str]]

EXCHANGE_PLANS = {"EXCHANGE_S_STANDARD", "EXCHANGE_S_ENTERPRISE", "EXCHANGE_S_DESKLESS"}
NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
TASK_ERROR = "Microsoft.Exchange.Management.Tasks.RecipientTaskException"
BIND_ERROR = "System.Management.Automation.ParameterBindingException"
TRANSFORM_ERROR = "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
NO_CHANGE = "The command completed successfully but no settings of '{}' have been modified."
WRITE_SCOPE = (
    "The operation on mailbox \"{id}\" failed because it's out of the current user's write scope. "
    "The action '{cmdlet}', '{param}', can't be performed on the object '{id}' because the object is "
    "being synchronized from your on-premises organization. This action should be performed on the "
    "object in your on-premises organization."
)
DUAL_WRITE = (
    "Error executing request. An Azure Active Directory call was made to keep object in sync between "
    "Azure Active Directory and Exchange Online. However, it failed. Detailed error message: Unable to "
    "update the specified properties for on-premises mastered Directory Sync objects or objects "
    "currently undergoing migration. DualWrite (Graph) RequestId: {rid} The issue may be transient and "
    "please retry a couple of minutes later. If issue persists, please see exception members for more "
    "information."
)
TYPE_TO_DETAILS = {
    "Regular": "UserMailbox",
    "Shared": "SharedMailbox",
    "Room": "RoomMailbox",
    "Equipment": "EquipmentMailbox",
    "Workspace": "WorkspaceMailbox",
    "Desk": "DeskMailbox",
}
CUSTOM_ATTRIBUTES = frozenset(f"CustomAttribute{i}" for i in range(1, 16))
EXCHANGE_ATTRIBUTES = {
    "EmailAddresses",
    "WindowsEmailAddress",
    "Alias",
    "DisplayName",
    "HiddenFromAddressListsEnabled",
    "PrimarySmtpAddress",
    *(f"CustomAttribute{i}" for i in range(1, 16)),
}
ALWAYS_WRITABLE = {"ProhibitSendQuota", "ProhibitSendReceiveQuota", "IssueWarningQuota"}  # B7
CAS_PARAMETERS = {"ImapEnabled", "PopEnabled", "SmtpClientAuthenticationDisabled"}  # B7
# ExchangeGuid is left out on purpose: no source shows it filterable for mail users, so the report filters client-side.
MAIL_USER_FILTERABLE = (
    "IsDirSynced",
    "RecipientTypeDetails",
    "UserPrincipalName",
    "PrimarySmtpAddress",
    "Alias",
    "DisplayName",
    "ExternalDirectoryObjectId",
    "Name",
)
MAILBOX_FILTERABLE = (
    *MAIL_USER_FILTERABLE,
    "WindowsEmailAddress",
    *(f"CustomAttribute{i}" for i in range(1, 16)),
)  # B10: IsExchangeCloudManaged is deliberately absent
# Get-MigrationEndpoint -Type (Learn, Get-MigrationEndpoint).
MIGRATION_TYPES = ("ExchangeOutlookAnywhere", "ExchangeRemoteMove", "IMAP", "PublicFolder")


class CmdletError(Exception):
    """A cmdlet failure as Exchange reports it: HTTP status, exception type, message."""

    def __init__(self, status: int, exception_type: str, message: str, details: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.exception_type = exception_type
        self.message = message
        self.details = details  # False: the reason is only in innererror.internalexception (a live 400 has that)


@dataclass(slots=True)
class License:
    sku_id: str
    disabled_plans: list[str] = field(default_factory=list)
    inherited: bool = False


@dataclass(slots=True)
class Mailbox:
    guid: str
    recipient_type: str
    addresses: list[str]
    cloud_managed: bool = False
    ready_at: float = 0.0
    pending_type: str | None = None
    pending_at: float = 0.0
    custom: dict[str, Any] = field(default_factory=dict)
    size_gb: float = 0.1
    archive: bool = False
    hold: bool = False
    archive_guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    in_place_holds: list[str] = field(default_factory=list)  # hold ids as InPlaceHolds lists them (mbx…, UniH…)
    compliance_tag_hold: bool = False  # a retention label on an item or folder (ComplianceTagHoldApplied)
    delay_hold: bool = False  # a hold released less than 30 days ago still holds (DelayHoldApplied)
    item_count: int = 42


@dataclass(slots=True)
class User:
    id: str
    upn: str
    display_name: str
    mail: str | None = None
    alias: str | None = None
    target_address: str | None = None
    dir_synced: bool = True
    usage_location: str | None = None
    account_enabled: bool = True
    guest: bool = False
    # A synced mail user carries its on-premises mailbox's GUID here (a remote mailbox); zero when it has none.
    exchange_guid: str = ZERO_GUID
    licenses: dict[str, License] = field(default_factory=dict)
    visible_at: float = 0.0
    writable_at: float = 0.0  # a user new to Entra reaches the replica that takes writes later than reads
    mailbox: Mailbox | None = None
    # What Graph reads still show while a write replicates: property -> (old value, shown until).
    stale: dict[str, tuple[Any, float]] = field(default_factory=dict)

    def primary_smtp(self) -> str:
        """B3/B4: the `mail` value when set, else the UPN."""
        return self.mail or self.upn

    def replicated(self, name: str, current: Any, now: float) -> Any:
        """What a read on another replica returns for `name`: the old value until the write has replicated."""
        old = self.stale.get(name)
        return old[0] if old and now < old[1] else current

    def replicate(self, name: str, old: Any, now: float, lag: float) -> None:
        """Record a write to `name`: other replicas show the value from before it for `lag` seconds."""
        pending = self.stale.get(name)
        if pending and now < pending[1]:
            old = pending[0]  # a second write before the first replicated: reads still show the oldest
        self.stale[name] = (old, now + lag)


@dataclass(slots=True)
class Contact:
    id: str
    name: str
    mail: str | None
    custom: dict[str, Any] = field(default_factory=dict)
    dir_synced: bool = True  # came from AD; False for a contact created in the cloud
    cloud_managed: bool = False  # its source of authority was moved to the cloud (onPremisesSyncBehavior)
    takeover_at: float | None = None  # rolled back: AD takes it over at the next sync cycle, this tenant time
    shown_managed: tuple[bool, float] | None = None  # the isCloudManaged reads still show after a PATCH, until when
    exchange_synced: tuple[bool, float] | None = None  # the IsDirSynced Exchange still shows, until when

    @classmethod
    def from_seed(cls, spec: dict[str, Any]) -> Contact:
        return cls(
            spec.get("id") or _guid(),
            spec["name"],
            spec.get("mail"),
            dir_synced=bool(spec.get("dirSynced", True)),
            cloud_managed=bool(spec.get("cloudManaged", False)),
        )


@dataclass(slots=True)
class Group:
    id: str
    name: str
    mail: str | None
    security_enabled: bool
    dir_synced: bool = True  # came from AD; False for a group created in the cloud
    cloud_managed: bool = False  # its source of authority was moved to the cloud (onPremisesSyncBehavior)
    members: list[str] = field(default_factory=list)  # names or ids of member groups, users and contacts
    group_types: list[str] = field(default_factory=list)  # Graph's groupTypes: "Unified" for a Microsoft 365 group
    takeover_at: float | None = None  # rolled back: AD takes it over at the next sync cycle, this tenant time
    shown_managed: tuple[bool, float] | None = None  # the isCloudManaged reads still show after a PATCH, until when
    exchange_synced: tuple[bool, float] | None = None  # the IsDirSynced Exchange still shows, until when

    @classmethod
    def from_seed(cls, spec: dict[str, Any]) -> Group:
        return cls(
            spec.get("id") or _guid(),
            spec["name"],
            spec.get("mail"),
            bool(spec.get("securityEnabled", False)),
            dir_synced=bool(spec.get("dirSynced", True)),
            cloud_managed=bool(spec.get("cloudManaged", False)),
            members=[str(m) for m in spec.get("members", [])],
            group_types=[str(t) for t in spec.get("groupTypes", [])],
        )


def sync_enabled(found: Group | Contact) -> bool | None:
    """Graph's onPremisesSyncEnabled: true while AD is the source; null, never false, once converted, while a rollback
    waits for the sync cycle, and for a cloud-born object (Entra's "Status of attributes after you convert SOA")."""
    return True if found.dir_synced and not found.cloud_managed and found.takeover_at is None else None


def shown_cloud_managed(found: Group | Contact, now: float) -> bool:
    """What a read of onPremisesSyncBehavior shows: the value from before a PATCH while the read lag lasts."""
    shown = found.shown_managed
    return shown[0] if shown and now < shown[1] else found.cloud_managed


def exchange_dir_synced(found: Group | Contact, now: float) -> bool:
    """Exchange's IsDirSynced follows Entra's onPremisesSyncEnabled, later by the replication lag."""
    old = found.exchange_synced
    return old[0] if old and now < old[1] else sync_enabled(found) is True


class Tenant:
    """All objects of one tenant plus what the sandbox saw happen to them; thread-safe."""

    def __init__(self, seed: dict[str, Any], clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        info = seed.get("tenant", {})
        self.id = info.get("id", "6f1c7c4e-0000-4000-8000-00000000c0de")
        self.domain = info.get("domain", "contoso.onmicrosoft.com")
        self.default_cloud_managed = bool(info.get("tenantDefaultCloudManaged", False))
        self.org_holds = [str(hold) for hold in info.get("inPlaceHolds", [])]
        self.skus: list[dict[str, Any]] = seed.get("skus", [])
        self.hybrid = load_hybrid(seed.get("hybrid", {}))
        self.users: dict[str, User] = {}
        self.contacts: dict[str, Contact] = {}
        self.groups: dict[str, Group] = {}
        self.writes: Counter[str] = Counter()
        self.hazards: list[str] = []
        # Each change of a source of authority, in the order applied (SandboxControl.authority_log).
        self.authority_log: list[dict[str, Any]] = []
        self._rollbacks: list[Group | Contact] = []  # rolled back, waiting for the sync cycle that takes them over
        self._index: dict[str, Any] | None = None
        self._add_objects(seed)
        if seed.get("withSourceOfAuthority"):
            # Opt-in, so that the readiness tests' exact counts of the default seed's synced groups stay as they are.
            self._add_objects(seed.get("sourceOfAuthority", {}))
        if "generate" in seed:
            self._generate(seed["generate"])

    # -- building ------------------------------------------------------------------------------

    def _add_objects(self, seed: dict[str, Any]) -> None:
        for spec in seed.get("users", []):
            self.add_user(spec)
        for spec in seed.get("contacts", []):
            contact = Contact.from_seed(spec)
            self.contacts[contact.id] = contact
        for spec in seed.get("groups", []):
            group = Group.from_seed(spec)
            self.groups[group.id] = group

    def add_user(self, spec: dict[str, Any], *, new: bool = False) -> User:
        """Add a user from a seed entry; a `mailboxType` gives it an existing mailbox.

        A `new` user is one AD creates now: reads see it after its sync delay, writes after the replication lag too.
        """
        upn = spec["upn"]
        user = User(
            id=spec.get("id") or _guid(),
            upn=upn,
            display_name=spec.get("displayName") or upn.split("@")[0],
            mail=spec.get("mail"),
            alias=spec.get("mailNickname"),
            target_address=spec.get("targetAddress"),
            dir_synced=bool(spec.get("dirSynced", True)),
            usage_location=spec.get("usageLocation"),
            account_enabled=bool(spec.get("accountEnabled", True)),
            guest=bool(spec.get("guest", False)),
            exchange_guid=str(spec.get("exchangeGuid") or ZERO_GUID),
            visible_at=self.clock() + float(spec.get("syncDelaySeconds", 0)),
        )
        if new:
            user.writable_at = user.visible_at + self.replication_lag
        for sku in spec.get("licenses", []):
            sku_id = self.sku_id(sku) or sku
            user.licenses[sku_id] = License(sku_id, inherited=bool(spec.get("licenseInherited", False)))
        kind = spec.get("mailboxType")
        if kind:
            details = {**TYPE_TO_DETAILS, "User": "UserMailbox"}.get(kind, kind)
            user.mailbox = self._seeded_mailbox(user, details, spec)
        self.users[user.id] = user
        self._index = None
        return user

    def _seeded_mailbox(self, user: User, recipient_type: str, spec: dict[str, Any]) -> Mailbox:
        """An existing mailbox as a seed entry describes it: management, size, archive and holds."""
        box = self._new_mailbox(user, recipient_type)
        box.cloud_managed = bool(spec.get("cloudManaged", False))
        box.size_gb = float(spec.get("mailboxSizeGB", 0.1))
        box.item_count = int(spec.get("itemCount", 42))
        box.archive = bool(spec.get("archive", False))
        box.hold = bool(spec.get("litigationHold", False))
        box.in_place_holds = [str(hold) for hold in spec.get("inPlaceHolds", [])]
        box.compliance_tag_hold = bool(spec.get("complianceTagHold", False))
        box.delay_hold = bool(spec.get("delayHold", False))
        if spec.get("primarySmtpAddress"):
            # A primary address that is not Entra's mail (the readiness report's drift). How real tenants get
            # there is not documented (docs/exchange-behaviour.md B28), so a seed states it instead of a rule.
            primary = str(spec["primarySmtpAddress"])
            others = ["smtp:" + a.split(":", 1)[1] if a.startswith("SMTP:") else a for a in box.addresses]
            box.addresses = [f"SMTP:{primary}", *(a for a in others if a.lower() != f"smtp:{primary.lower()}")]
        return box

    def _new_mailbox(self, user: User, recipient_type: str, ready_at: float = 0.0) -> Mailbox:
        alias = user.alias or user.upn.split("@")[0]
        addresses = [f"SMTP:{user.primary_smtp()}", f"smtp:{alias}@{self.domain}", f"SIP:{user.upn.lower()}"]
        return Mailbox(_guid(), recipient_type, addresses, cloud_managed=self.default_cloud_managed, ready_at=ready_at)

    def _generate(self, spec: dict[str, Any]) -> None:
        """A synthetic tenant: `mailboxes` dir-synced mailboxes (`candidates` not cloud-managed), synced `groups` nested
        in chains of three (`mailEnabledShare` of them with mail, all by default), and synced `contacts`."""
        count = int(spec.get("mailboxes", 1000))
        candidates = int(spec.get("candidates", count // 10))
        rng = random.Random(int(spec.get("seed", 1)))
        chosen = set(rng.sample(range(count), min(candidates, count)))
        kinds = ["User"] * 17 + ["Shared", "Room", "Equipment"]
        domain = spec.get("domain", "contoso.com")
        for i in range(count):
            kind = kinds[i % len(kinds)]
            self.add_user(
                {
                    "upn": f"user{i:06d}@{domain}",
                    "mail": f"user{i:06d}@{domain}",
                    "mailboxType": kind,
                    "cloudManaged": i not in chosen,
                    "licenses": [] if kind != "User" else ["EXCHANGESTANDARD"],
                }
            )
        groups = int(spec.get("groups", 0))
        # The share of groups with mail (distribution lists and mail-enabled security groups); the rest are
        # security groups without mail. 1.0, every group with mail, is what the generator always made.
        share = float(spec.get("mailEnabledShare", 1.0))
        for i in range(groups):
            # Chains of three: group 0 holds 1, which holds 2; then 3 holds 4, and so on.
            nested = [f"group{i + 1:05d}"] if i % 3 != 2 and i + 1 < groups else []
            name = f"group{i:05d}"
            mail_enabled = int((i + 1) * share) > int(i * share)  # spread evenly, the same on every run
            group = Group.from_seed(
                {
                    "name": name,
                    "mail": f"{name}@{domain}" if mail_enabled else None,
                    "securityEnabled": i % 2 == 0 or not mail_enabled,
                    "members": nested,
                }
            )
            self.groups[group.id] = group
        for i in range(int(spec.get("contacts", 0))):
            contact = Contact.from_seed({"name": f"contact{i:05d}", "mail": f"contact{i:05d}@fabrikam.com"})
            self.contacts[contact.id] = contact

    # -- identity ------------------------------------------------------------------------------

    def sku_id(self, part_or_id: str) -> str | None:
        for sku in self.skus:
            if part_or_id.lower() in (sku["skuId"].lower(), sku["skuPartNumber"].lower()):
                return str(sku["skuId"])
        return None

    def visible_users(self) -> Iterable[User]:
        now = self.clock()
        return (u for u in self.users.values() if u.visible_at <= now)

    def mailbox_users(self) -> Iterable[User]:
        now = self.clock()
        for user in [u for u in self.users.values() if u.visible_at <= now]:
            if user.mailbox is not None and user.mailbox.ready_at <= now:
                self._settle_conversion(user.mailbox, now)
                yield user

    def resolve(self, identity: str) -> Any:
        """Find an object by id, UPN, any address, alias or name (case-insensitive), as Exchange does."""
        with self.lock:
            if self._index is None:
                self._index = self._build_index()
            found = self._index.get(str(identity).lower())
        if isinstance(found, User) and found.visible_at > self.clock():
            return None
        return found

    def _build_index(self) -> dict[str, Any]:
        index: dict[str, Any] = {}
        for group in self.groups.values():
            for key in (group.id, group.name, group.mail):
                if key:
                    index[key.lower()] = group
        for contact in self.contacts.values():
            for key in (contact.id, contact.name, contact.mail):
                if key:
                    index[key.lower()] = contact
        for user in self.users.values():
            keys = [user.id, user.upn, user.mail, user.alias, user.display_name]
            if user.mailbox:
                keys += [a.split(":", 1)[1] for a in user.mailbox.addresses] + [user.mailbox.guid]
            for key in keys:
                if key:
                    index[key.lower()] = user
        return index

    def reindex(self) -> None:
        with self.lock:
            self._index = None

    # -- on-premises changes (the sandbox's stand-in for AD + a sync cycle) --------------------

    def sync_mail_change(self, upn: str, mail: str) -> None:
        """B5: a new `mail` from AD becomes the primary address; the old primary stays as smtp:."""
        with self.lock:
            user = next(u for u in self.users.values() if u.upn.lower() == upn.lower())
            user.mail = mail
            if user.mailbox:
                box = user.mailbox
                demoted = ["smtp:" + a.split(":", 1)[1] if a.startswith("SMTP:") else a for a in box.addresses]
                demoted = [a for a in demoted if a.lower() != f"smtp:{mail.lower()}"]
                box.addresses = [f"SMTP:{mail}", *demoted]
            self._index = None

    # -- source of authority (Graph's onPremisesSyncBehavior, and the sync cycle that follows a rollback) -----

    def change_authority(
        self, kind: str, found: Group | Contact, managed: bool, *, cycle: float, read_lag: float
    ) -> Literal["changed", "unchanged", "cloud-born"]:
        """PATCH onPremisesSyncBehavior: convert (true) or roll back (false) a synced object's source of authority.

        A rollback completes only at the next sync cycle, `cycle` seconds on; reads of the behaviour show the old
        value for `read_lag` seconds. A cloud-born object is refused and recorded as a hazard."""
        with self.lock:
            now = self.clock()
            self.settle_authority()
            noun = "group" if kind == "groups" else "contact"
            if not found.dir_synced:
                # Unverified what Graph does; no client should try it (Microsoft's script skips such objects).
                self.hazards.append(f"PATCH onPremisesSyncBehavior on cloud-born {noun} {found.name}")
                return "cloud-born"
            if found.cloud_managed == managed:
                return "unchanged"  # unverified: the tools found check first and skip, so idempotency is a guess
            shown = shown_cloud_managed(found, now)
            found.shown_managed = (shown, now + read_lag) if read_lag > 0 else None
            found.exchange_synced = (exchange_dir_synced(found, now), now + self.replication_lag)
            found.cloud_managed = managed
            if managed:
                found.takeover_at = None  # converted again before the sync cycle: nothing is taken over
            else:
                found.takeover_at = now + cycle
                self._rollbacks.append(found)
            self.authority_log.append(
                {"kind": kind, "id": found.id, "name": found.name, "isCloudManaged": managed, "at": now}
            )
            return "changed"

    def settle_authority(self, *, now_all: bool = False) -> None:
        """Let the sync cycle take back every rolled-back object whose cycle has come (all of them with `now_all`)."""
        with self.lock:
            now = self.clock()
            for found in list(self._rollbacks):
                due = found.takeover_at
                if due is not None and not now_all and due > now:
                    continue
                self._rollbacks.remove(found)
                if due is not None:
                    self._take_over(found, min(due, now))

    def resync(self) -> None:
        """Run a sync cycle now, as Start-ADSyncSyncCycle would."""
        self.settle_authority(now_all=True)

    def _take_over(self, found: Group | Contact, at: float) -> None:
        """AD takes the object back: synced again, and a group keeps only the members AD knows.

        Unverified what happens to cloud-only members: Microsoft says remove them before a rollback, and the worst case
        (they are lost) is what is modelled, as a hazard a client must never cause."""
        found.exchange_synced = (exchange_dir_synced(found, at), at + self.replication_lag)
        found.takeover_at = None
        if not isinstance(found, Group):
            return
        lost = [m for m in found.members if getattr(self.resolve(m), "dir_synced", True) is False]
        if lost:
            found.members = [m for m in found.members if m not in lost]
            self.hazards.append(f"cloud-only members of {found.name} lost at takeover: {', '.join(lost)}")

    def member_objects(self, group: Group) -> list[User | Group | Contact]:
        """A group's direct members that the directory can see, in the order they were added."""
        found = (self.resolve(member) for member in group.members)
        return [m for m in found if isinstance(m, User | Group | Contact)]

    def directory_state(self) -> dict[str, Any]:
        """Every group and contact with its source of authority and (groups) its members' names, for tests."""
        with self.lock:
            self.settle_authority()
            groups = [
                {
                    "id": g.id,
                    "name": g.name,
                    "mailEnabled": g.mail is not None,
                    "securityEnabled": g.security_enabled,
                    "isCloudManaged": g.cloud_managed,
                    "onPremisesSyncEnabled": sync_enabled(g),
                    "members": [_member_name(self.resolve(m), m) for m in g.members],
                }
                for g in self.groups.values()
            ]
            contacts = [
                {
                    "id": c.id,
                    "name": c.name,
                    "mail": c.mail,
                    "isCloudManaged": c.cloud_managed,
                    "onPremisesSyncEnabled": sync_enabled(c),
                }
                for c in self.contacts.values()
            ]
            return {"groups": groups, "contacts": contacts}

    def authority_control(self, name: str) -> Any:
        """The control endpoints about sources of authority: authority-log, directory-state, resync."""
        if name == "resync":
            self.resync()
            return {"ok": True}
        if name == "directory-state":
            return self.directory_state()
        with self.lock:
            return list(self.authority_log)

    # -- cmdlets -------------------------------------------------------------------------------

    def run(self, cmdlet: str, params: dict[str, Any]) -> Answer:
        """Run one cmdlet; return (objects, warnings) or raise CmdletError. Listings are lazy."""
        handler = getattr(self, "_cmd_" + cmdlet.replace("-", "_").lower(), None)
        if handler is None:
            raise UnknownCmdlet(cmdlet)
        with self.lock:
            if not cmdlet.startswith("Get-") and "Identity" in params:
                found = self.resolve(params["Identity"])
                self.writes[getattr(found, "id", str(params["Identity"]))] += 1
            result: Answer = handler(dict(params))
            return result

    def _cmd_get_organizationconfig(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-OrganizationConfig", set())
        return [
            {
                "Name": self.domain,
                "Identity": self.domain,
                "BlockExchangeProvisioningFromOnPremEnabled": self.default_cloud_managed,
                # Org-wide retention policies (mbx<guid>:n) live here, not on each mailbox (B25).
                "InPlaceHolds": list(self.org_holds),
            }
        ], []

    # The objects the Hybrid Configuration Wizard leaves in Exchange Online (read-only here, as in the report).
    def _cmd_get_onpremisesorganization(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-OnPremisesOrganization", {"Identity"})
        return self._hybrid("onPremisesOrganizations", params), []

    def _cmd_get_organizationrelationship(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-OrganizationRelationship", {"Identity"})
        return self._hybrid("organizationRelationships", params), []

    def _cmd_get_inboundconnector(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-InboundConnector", {"Identity", "ResultSize"})
        return self._hybrid("inboundConnectors", params), []

    def _cmd_get_outboundconnector(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-OutboundConnector", {"Identity", "ResultSize"})
        return self._hybrid("outboundConnectors", params), []

    def _cmd_get_intraorganizationconnector(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-IntraOrganizationConnector", {"Identity"})
        return self._hybrid("intraOrganizationConnectors", params), []

    def _cmd_get_migrationendpoint(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-MigrationEndpoint", {"Identity", "Type"})
        if "Identity" in params and "Type" in params:
            raise CmdletError(400, BIND_ERROR, "Parameter set cannot be resolved using the specified named parameters.")
        records = self._hybrid("migrationEndpoints", params)
        if "Type" in params:
            kind = _migration_type(params["Type"])
            records = [r for r in records if r["EndpointType"] == kind]
        return records, []

    def _hybrid(self, kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every object of a kind, or the one `Identity` names by identity, name or GUID."""
        records = self.hybrid.get(kind, [])
        if "Identity" not in params:
            return list(records)
        wanted = str(params["Identity"]).lower()
        found = [r for r in records if wanted in {str(r.get(k, "")).lower() for k in ("Identity", "Name", "Guid")}]
        if not found:
            raise _not_found(params["Identity"])
        return found

    def _cmd_get_mailbox(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-Mailbox", {"Identity", "Filter", "ResultSize", "RecipientTypeDetails"})
        if "Identity" in params:
            records: Iterable[dict[str, Any]] = [mailbox_record(self._mailbox_user(params))]
        else:
            records = (mailbox_record(u) for u in self.mailbox_users())
        return _filtered(records, params.get("Filter"), MAILBOX_FILTERABLE), []

    def _cmd_set_mailbox(self, params: dict[str, Any]) -> Answer:
        allowed = {"Identity", "IsExchangeCloudManaged", "Type"} | EXCHANGE_ATTRIBUTES | ALWAYS_WRITABLE
        _only(params, "Set-Mailbox", allowed)
        user = self._mailbox_user(params)
        box = user.mailbox
        assert box is not None
        identity = str(params.pop("Identity"))
        changes = dict(params)
        if "IsExchangeCloudManaged" in changes:
            if len(changes) > 1:
                raise CmdletError(
                    400, BIND_ERROR, "Parameter set cannot be resolved using the specified named parameters."
                )
            value = changes["IsExchangeCloudManaged"]
            if not isinstance(value, bool):
                raise CmdletError(
                    400,
                    TRANSFORM_ERROR,
                    "Cannot process argument transformation on parameter "
                    f'\'IsExchangeCloudManaged\'. Cannot convert value "{value}" to type "System.Boolean".',
                    details=False,
                )
            if box.cloud_managed == value:
                return [], [NO_CHANGE.format(identity)]
            box.cloud_managed = value  # B8
            return [], []
        if "Type" in changes:
            return self._convert(user, identity, str(changes.pop("Type")))
        for name in changes:
            if name in EXCHANGE_ATTRIBUTES and user.dir_synced and not box.cloud_managed:
                raise CmdletError(400, TASK_ERROR, WRITE_SCOPE.format(id=identity, cmdlet="Set-Mailbox", param=name))
        before = dict(box.custom)
        box.custom.update(changes)
        return [], [] if before != box.custom else [NO_CHANGE.format(identity)]

    def _convert(self, user: User, identity: str, kind: str) -> Answer:
        """B13: convert at any time; the new type shows after the conversion lag."""
        target = TYPE_TO_DETAILS.get(kind.capitalize())
        if target is None:
            raise CmdletError(
                400,
                TRANSFORM_ERROR,
                f"Cannot process argument transformation on parameter 'Type'. Cannot convert value \"{kind}\" to "
                'type "Microsoft.Exchange.Data.Directory.Recipient.ConvertibleMailboxSubType". Error: "Unable to '
                f"match the identifier name {kind} to a valid enumerator name. Specify one of the following "
                'enumerator names and try again: Regular, Room, Equipment, Shared, Workspace, Desk"',
                details=False,
            )
        box = user.mailbox
        assert box is not None
        if (box.pending_type or box.recipient_type) == target:
            return [], [NO_CHANGE.format(identity)]
        box.pending_type = target
        box.pending_at = self.clock() + self.conversion_lag
        return [], []

    conversion_lag = 0.0
    mailbox_delay = 0.0
    replication_lag = 0.0

    # -- licensing (Graph's assignLicense, and what Exchange does about it) ----------------------

    def sku(self, sku_id: str) -> dict[str, Any] | None:
        return next((s for s in self.skus if s["skuId"].lower() == sku_id.lower()), None)

    def has_exchange_plan(self, user: User) -> bool:
        """Whether any license of the user leaves an Exchange Online plan enabled."""
        for sku_id, assignment in user.licenses.items():
            sku = self.sku(sku_id)
            plans = (
                sku.get("servicePlans", [])
                if sku
                else [{"servicePlanName": "EXCHANGE_S_STANDARD", "servicePlanId": ""}]
            )
            if any(
                p["servicePlanName"] in EXCHANGE_PLANS and p["servicePlanId"] not in assignment.disabled_plans
                for p in plans
            ):
                return True
        return False

    def assign_license(self, user: User, sku_id: str, disabled_plans: list[str]) -> None:
        """B2: an Exchange plan creates the mailbox, after the provisioning delay, with B3/B4 addresses."""
        sku = self.sku(sku_id)
        assert sku is not None
        user.replicate("licenses", dict(user.licenses), self.clock(), self.replication_lag)
        if sku_id not in user.licenses:
            sku["consumedUnits"] = int(sku.get("consumedUnits", 0)) + 1
        user.licenses[sku_id] = License(sku_id, list(disabled_plans))
        if user.mailbox is None and self.has_exchange_plan(user):
            user.mailbox = self._new_mailbox(user, "UserMailbox", ready_at=self.clock() + self.mailbox_delay)
            self._index = None

    def remove_license(self, user: User, sku_id: str) -> None:
        """Remove a license; doing so while the mailbox still reads UserMailbox is a recorded hazard."""
        sku = self.sku(sku_id)
        if sku is not None:
            sku["consumedUnits"] = max(0, int(sku.get("consumedUnits", 0)) - 1)
        user.replicate("licenses", dict(user.licenses), self.clock(), self.replication_lag)
        del user.licenses[sku_id]
        box = user.mailbox
        if box is not None and not self.has_exchange_plan(user):
            self._settle_conversion(box, self.clock())
            if box.recipient_type == "UserMailbox":
                # Unlicensed user mailboxes are soft-deleted after 30 days (convert-user-mailbox-to-shared).
                self.hazards.append(f"license removed from {user.upn} while its mailbox reads UserMailbox")

    def _cmd_get_mailboxstatistics(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-MailboxStatistics", {"Identity"})
        return [statistics_record(self._mailbox_user(params))], []

    def _settle_conversion(self, box: Mailbox, now: float) -> None:
        if box.pending_type and box.pending_at <= now:
            box.recipient_type, box.pending_type = box.pending_type, None

    def _cmd_set_casmailbox(self, params: dict[str, Any]) -> Answer:
        _only(params, "Set-CASMailbox", {"Identity"} | CAS_PARAMETERS)
        user = self._mailbox_user(params)
        assert user.mailbox is not None
        params.pop("Identity")
        user.mailbox.custom.update(params)  # B7: protocol settings were always writable in the cloud
        return [], []

    def _cmd_get_user(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-User", {"Identity", "Filter", "ResultSize"})
        users = list(self.visible_users())
        if "Identity" in params:
            found = self.resolve(params["Identity"])
            if not isinstance(found, User):
                raise _not_found(params["Identity"])
            users = [found]
        records = [self._user_record(u) for u in users]
        return _filtered(
            records, params.get("Filter"), ("IsDirSynced", "UserPrincipalName", "RecipientTypeDetails")
        ), []

    def _user_record(self, user: User) -> dict[str, Any]:
        now = self.clock()
        if user.mailbox and user.mailbox.ready_at <= now:
            self._settle_conversion(user.mailbox, now)
            kind = user.mailbox.recipient_type
        elif _is_mail_user(user):
            kind = "GuestMailUser" if user.guest else "MailUser"
        else:
            kind = "User"  # B1: every synced user is a User, mail and license or not
        return {
            "Name": user.display_name,
            "UserPrincipalName": user.upn,
            "ExternalDirectoryObjectId": user.id,
            "IsDirSynced": user.dir_synced,
            "RecipientTypeDetails": kind,
            "WindowsEmailAddress": user.mail or "",
        }

    def _cmd_get_mailuser(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-MailUser", {"Identity", "Filter", "ResultSize"})
        users = [u for u in self.visible_users() if _is_mail_user(u) and u.mailbox is None]
        records = [mail_user_record(u) for u in self._pick(params, users)]
        return _filtered(records, params.get("Filter"), MAIL_USER_FILTERABLE), []

    def _cmd_set_mailuser(self, params: dict[str, Any]) -> Answer:
        custom = CUSTOM_ATTRIBUTES
        _only(params, "Set-MailUser", {"Identity", "Alias", "ExchangeGuid"} | custom)  # B18: no IsExchangeCloudManaged
        identity = str(params.pop("Identity"))
        found = self.resolve(identity)
        if not isinstance(found, User) or not _is_mail_user(found):
            raise _not_found(identity)
        if set(params) & custom and found.dir_synced:
            raise CmdletError(500, TASK_ERROR, DUAL_WRITE.format(rid=_guid()))  # B18
        if "Alias" in params:
            found.alias = str(params["Alias"])  # B18: the cloud alias sticks, a full sync does not reset it
            self._index = None
        if "ExchangeGuid" in params:
            found.exchange_guid = str(params["ExchangeGuid"])  # B18: writable in the cloud
        return [], []

    def _cmd_get_mailcontact(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-MailContact", {"Identity", "Filter", "ResultSize"})
        contacts = [c for c in self.contacts.values() if c.mail]  # B20: no mail, no recipient
        self.settle_authority()
        now = self.clock()
        return [contact_record(c, now) for c in self._pick(params, contacts)], []

    def _cmd_set_mailcontact(self, params: dict[str, Any]) -> Answer:
        custom = CUSTOM_ATTRIBUTES
        _only(params, "Set-MailContact", {"Identity", "HiddenFromAddressListsEnabled", "DisplayName"} | custom)
        identity = str(params.pop("Identity"))
        found = self.resolve(identity)
        if not isinstance(found, Contact) or not found.mail:
            raise _not_found(identity)
        if set(params) & (custom | {"DisplayName"}):
            name = sorted(set(params) & (custom | {"DisplayName"}))[0]
            raise CmdletError(400, TASK_ERROR, WRITE_SCOPE.format(id=identity, cmdlet="Set-MailContact", param=name))
        return [], []  # B21: some edits "succeed" without error and are not written

    def _cmd_get_distributiongroup(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-DistributionGroup", {"Identity", "Filter", "ResultSize"})
        groups = [g for g in self.groups.values() if g.mail]  # B22: no mail, no recipient
        self.settle_authority()
        now = self.clock()
        return [group_record(g, now) for g in self._pick(params, groups)], []

    def _pick(self, params: dict[str, Any], candidates: list[Any]) -> list[Any]:
        """All candidates, or the one `Identity` names (not found when it names none of them)."""
        if "Identity" not in params:
            return candidates
        found = self.resolve(params["Identity"])
        if found not in candidates:
            raise _not_found(params["Identity"])
        return [found]

    def _cmd_set_distributiongroup(self, params: dict[str, Any]) -> Answer:
        custom = CUSTOM_ATTRIBUTES
        _only(params, "Set-DistributionGroup", {"Identity", "DisplayName", "HiddenFromAddressListsEnabled"} | custom)
        identity = str(params.pop("Identity"))
        if not isinstance(self.resolve(identity), Group):
            raise _not_found(identity)
        name = sorted(params)[0] if params else "Identity"
        raise CmdletError(
            400, TASK_ERROR, WRITE_SCOPE.format(id=identity, cmdlet="Set-DistributionGroup", param=name)
        )  # B23

    def _cmd_get_recipient(self, params: dict[str, Any]) -> Answer:
        _only(params, "Get-Recipient", {"Identity", "Filter", "ResultSize", "RecipientTypeDetails"})
        records = [mailbox_record(u) for u in self.mailbox_users()]
        records += [mail_user_record(u) for u in self.visible_users() if _is_mail_user(u) and u.mailbox is None]
        self.settle_authority()
        now = self.clock()
        records += [contact_record(c, now) for c in self.contacts.values() if c.mail]
        records += [group_record(g, now) for g in self.groups.values() if g.mail]
        if "Identity" in params:
            wanted = str(params["Identity"]).lower()
            records = [r for r in records if wanted in _record_keys(r)]
            if not records:
                raise _not_found(params["Identity"])
        return _filtered(iter(records), params.get("Filter"), MAILBOX_FILTERABLE), []

    def _mailbox_user(self, params: dict[str, Any]) -> User:
        if "Identity" not in params:
            raise CmdletError(
                400, BIND_ERROR, "Cannot process command because of one or more missing mandatory parameters: Identity."
            )
        found = self.resolve(params["Identity"])
        now = self.clock()
        if not isinstance(found, User) or found.mailbox is None or found.mailbox.ready_at > now:
            raise _not_found(params["Identity"])
        self._settle_conversion(found.mailbox, now)
        return found


class UnknownCmdlet(Exception):
    """The cmdlet does not exist; Exchange answers this with a 403 and a NUL-filled gzip body."""


def mailbox_record(user: User) -> dict[str, Any]:
    box = user.mailbox
    assert box is not None
    primary = next(a.split(":", 1)[1] for a in box.addresses if a.startswith("SMTP:"))
    alias = user.alias or user.upn.split("@")[0]
    record = {
        "Identity": alias,
        "Name": alias,
        "Alias": alias,
        "DisplayName": user.display_name,
        "UserPrincipalName": user.upn,
        "PrimarySmtpAddress": primary,
        "WindowsEmailAddress": primary,
        "EmailAddresses": list(box.addresses),
        "RecipientType": "UserMailbox",
        "RecipientTypeDetails": box.recipient_type,
        "IsDirSynced": user.dir_synced,
        "IsExchangeCloudManaged": box.cloud_managed,
        "ExternalDirectoryObjectId": user.id,
        "ExchangeGuid": box.guid,
        "Guid": box.guid,
        # An archive shows in ArchiveGuid and ArchiveDatabase; on a synced mailbox ArchiveStatus can read None
        # although the archive exists (Microsoft's KB 4486848), so that is what the sandbox answers.
        "ArchiveGuid": box.archive_guid if box.archive else ZERO_GUID,
        "ArchiveDatabase": "CONPR01DG042-db017" if box.archive else None,
        "ArchiveDatabaseGuid": "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170" if box.archive else ZERO_GUID,
        "ArchiveName": [f"In-Place Archive - {user.display_name}"] if box.archive else [],
        "ArchiveDomain": None,
        "ArchiveQuota": "100 GB (107,374,182,400 bytes)",
        "ArchiveWarningQuota": "90 GB (96,636,764,160 bytes)",
        "AutoExpandingArchiveEnabled": False,
        "ArchiveState": "Local" if box.archive else "None",
        "ArchiveStatus": "Active" if box.archive and not user.dir_synced else "None",
        "LitigationHoldEnabled": box.hold,
        "InPlaceHolds": list(box.in_place_holds),
        "ComplianceTagHoldApplied": box.compliance_tag_hold,
        "DelayHoldApplied": box.delay_hold,
        "HiddenFromAddressListsEnabled": bool(box.custom.get("HiddenFromAddressListsEnabled", False)),
    }
    for i in range(1, 16):
        record[f"CustomAttribute{i}"] = box.custom.get(f"CustomAttribute{i}", "")
    return record


def mail_user_record(user: User) -> dict[str, Any]:
    return {
        "Name": user.display_name,
        "DisplayName": user.display_name,
        "ExchangeGuid": user.exchange_guid,  # a remote mailbox's on-premises mailbox; the zero GUID when none
        "Alias": user.alias,
        "UserPrincipalName": user.upn,
        "PrimarySmtpAddress": user.mail,
        "ExternalEmailAddress": f"SMTP:{user.target_address}" if user.target_address else "",
        "RecipientTypeDetails": "GuestMailUser" if user.guest else "MailUser",
        "IsDirSynced": user.dir_synced,
        "ExternalDirectoryObjectId": user.id,
        "HiddenFromAddressListsEnabled": user.guest,  # B19: guests are hidden by default
    }


def statistics_record(user: User) -> dict[str, Any]:
    """Get-MailboxStatistics of a mailbox; sizes are display texts with the exact byte count in parentheses."""
    box = user.mailbox
    assert box is not None
    return {
        "DisplayName": user.display_name,
        "MailboxGuid": box.guid,
        "ItemCount": box.item_count,
        "TotalItemSize": byte_quantity(int(box.size_gb * 1024**3)),
        "TotalDeletedItemSize": byte_quantity(0),
        "IsArchiveMailbox": False,
    }


def byte_quantity(size: int) -> str:
    """Exchange's size text: the largest unit the value reaches, at most three decimals, then the exact bytes."""
    value, unit = float(size), "B"
    for larger in ("KB", "MB", "GB", "TB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    number = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{number} {unit} ({size:,} bytes)"


def contact_record(contact: Contact, now: float) -> dict[str, Any]:
    return {
        "Name": contact.name,
        "PrimarySmtpAddress": contact.mail,
        "RecipientTypeDetails": "MailContact",
        "IsDirSynced": exchange_dir_synced(contact, now),
        "ExternalDirectoryObjectId": contact.id,
    }


def group_record(group: Group, now: float) -> dict[str, Any]:
    # B22: any synced group with mail becomes a universal distribution group, whatever its AD scope.
    kind = "MailUniversalSecurityGroup" if group.security_enabled else "MailUniversalDistributionGroup"
    return {
        "Name": group.name,
        "PrimarySmtpAddress": group.mail,
        "RecipientTypeDetails": kind,
        "GroupType": "Universal" + (", SecurityEnabled" if group.security_enabled else ""),
        # False once the source of authority is the cloud, after the replication lag (a third-party DL guide
        # checks (Get-DistributionGroup).IsDirSynced for exactly that: medium evidence at best).
        "IsDirSynced": exchange_dir_synced(group, now),
        "ExternalDirectoryObjectId": group.id,
    }


def _member_name(found: Any, stored: str) -> str:
    """How directory_state names a member: a user by UPN, a group or contact by name, anything else as stored."""
    if isinstance(found, User):
        return found.upn
    if isinstance(found, Group | Contact):
        return found.name
    return stored


def _is_mail_user(user: User) -> bool:
    """B17: alias, mail and targetAddress together make a MailUser; guests always are one (B19)."""
    return user.guest or bool(user.alias and user.mail and user.target_address)


def _record_keys(record: dict[str, Any]) -> set[str]:
    keys = {
        str(record.get(k, "")).lower()
        for k in ("Name", "Alias", "UserPrincipalName", "PrimarySmtpAddress", "ExternalDirectoryObjectId")
    }
    return keys - {""}


def _filtered(records: Iterable[dict[str, Any]], text: Any, filterable: Iterable[str]) -> Iterable[dict[str, Any]]:
    if not text:
        return records
    try:
        predicate: Predicate = compile_filter(str(text), tuple(filterable))
    except FilterError as exc:
        raise CmdletError(
            400, BIND_ERROR, f'Cannot bind parameter \'Filter\' to the target. Exception setting "Filter": "{exc}"'
        ) from exc
    return (r for r in records if predicate(r))


def _only(params: dict[str, Any], cmdlet: str, allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise CmdletError(400, BIND_ERROR, f"A parameter cannot be found that matches parameter name '{name}'.")


def _not_found(identity: Any) -> CmdletError:
    return CmdletError(
        404,
        NOT_FOUND,
        f"The operation couldn't be performed because object '{identity}' "
        "couldn't be found on 'AM6PR01A001DC01.EURPR01A001.prod.outlook.com'.",
    )


def _guid() -> str:
    return str(uuid.uuid4())


def _stable_guid(kind: str, name: str) -> str:
    """The same GUID for the same seeded object on every reset, so a test can name it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox/{kind}/{name}"))


def _migration_type(value: Any) -> str:
    for kind in MIGRATION_TYPES:
        if str(value).lower() == kind.lower():
            return kind
    raise CmdletError(
        400,
        TRANSFORM_ERROR,
        f"Cannot process argument transformation on parameter 'Type'. Cannot convert value \"{value}\" to type "
        '"Microsoft.Exchange.Data.Storage.Management.MigrationType". Error: "Unable to match the identifier name '
        f"{value} to a valid enumerator name. Specify one of the following enumerator names and try again: "
        f'{", ".join(MIGRATION_TYPES)}"',
        details=False,
    )


# -- hybrid leftovers: what the Hybrid Configuration Wizard creates in Exchange Online, named as it names them
# (Hybrid-Config-Wiz-Checks's replay of the wizard's cmdlets; the wizard's own name templates).


def onpremises_organization_record(spec: dict[str, Any]) -> dict[str, Any]:
    org = str(spec["organizationGuid"])
    name = str(spec.get("name") or org)
    return {
        "Identity": name,
        "Name": name,
        "Guid": str(spec.get("guid") or _stable_guid("onPremisesOrganization", name)),
        "OrganizationGuid": org,
        "OrganizationName": str(spec.get("organizationName", "CONTOSO")),
        "HybridDomains": [str(d) for d in spec.get("hybridDomains", [])],
        "InboundConnector": str(spec.get("inboundConnector") or f"Inbound from {org}"),
        "OutboundConnector": str(spec.get("outboundConnector") or f"Outbound to {org}"),
        "OrganizationRelationship": str(spec.get("organizationRelationship") or f"O365 to On-premises - {org}"),
        "Comment": str(spec.get("comment", "")),
    }


def organization_relationship_record(spec: dict[str, Any]) -> dict[str, Any]:
    name = str(spec["name"])
    return {
        "Identity": name,
        "Name": name,
        "Guid": str(spec.get("guid") or _stable_guid("organizationRelationship", name)),
        "Enabled": bool(spec.get("enabled", True)),
        "DomainNames": [str(d) for d in spec.get("domainNames", [])],
        "FreeBusyAccessEnabled": bool(spec.get("freeBusyAccessEnabled", True)),
        "FreeBusyAccessLevel": str(spec.get("freeBusyAccessLevel", "LimitedDetails")),
        "MailboxMoveEnabled": bool(spec.get("mailboxMoveEnabled", False)),
        "MailTipsAccessEnabled": bool(spec.get("mailTipsAccessEnabled", True)),
        "DeliveryReportEnabled": bool(spec.get("deliveryReportEnabled", True)),
        "PhotosEnabled": bool(spec.get("photosEnabled", True)),
        "TargetApplicationUri": spec.get("targetApplicationUri"),
        "TargetAutodiscoverEpr": spec.get("targetAutodiscoverEpr"),
        "TargetSharingEpr": spec.get("targetSharingEpr"),
        "TargetOwaURL": spec.get("targetOwaUrl"),
    }


def _connector_record(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """What Get-InboundConnector and Get-OutboundConnector share (graph2otel's live records, 2026-07-23/24)."""
    name = str(spec["name"])
    return {
        "Identity": name,
        "Name": name,
        "Guid": str(spec.get("guid") or _stable_guid(kind, name)),
        "Enabled": bool(spec.get("enabled", True)),
        "ConnectorType": str(spec.get("connectorType", "OnPremises")),
        "ConnectorSource": str(spec.get("connectorSource", "HybridWizard")),
        "Comment": str(spec.get("comment", "")),
        "CloudServicesMailEnabled": bool(spec.get("cloudServicesMailEnabled", True)),
        "AdminDisplayName": "",
        "IsValid": True,
    }


def inbound_connector_record(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        **_connector_record("inboundConnector", spec),
        "SenderDomains": [str(d) for d in spec.get("senderDomains", ["smtp:*;1"])],
        "SenderIPAddresses": [str(a) for a in spec.get("senderIPAddresses", [])],
        "AssociatedAcceptedDomains": [],
        "RequireTls": bool(spec.get("requireTls", True)),
        "RestrictDomainsToIPAddresses": False,
        "RestrictDomainsToCertificate": False,
        "TreatMessagesAsInternal": False,
        "TlsSenderCertificateName": spec.get("tlsSenderCertificateName"),
    }


def outbound_connector_record(spec: dict[str, Any]) -> dict[str, Any]:
    # The outbound record is another shape, not the inbound one plus fields (graph2otel, live 2026-07-24).
    return {
        **_connector_record("outboundConnector", spec),
        "RecipientDomains": [str(d) for d in spec.get("recipientDomains", [])],
        "SmartHosts": [str(h) for h in spec.get("smartHosts", [])],
        "UseMXRecord": bool(spec.get("useMxRecord", False)),
        "TlsDomain": spec.get("tlsDomain"),
        "TlsSettings": spec.get("tlsSettings", "DomainValidation"),
        "IsTransportRuleScoped": False,
        "RouteAllMessagesViaOnPremises": bool(spec.get("routeAllMessagesViaOnPremises", False)),
        "AllAcceptedDomains": False,
        "SenderRewritingEnabled": False,
        "TestMode": False,
    }


def migration_endpoint_record(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "Identity": str(spec["name"]),
        "EndpointType": _migration_type(spec.get("endpointType", "ExchangeRemoteMove")),
        "RemoteServer": spec.get("remoteServer"),
        "RemoteTenant": spec.get("remoteTenant"),
    }


def intraorganization_connector_record(spec: dict[str, Any]) -> dict[str, Any]:
    name = str(spec["name"])
    return {
        "Identity": name,
        "Name": name,
        "Guid": str(spec.get("guid") or _stable_guid("intraOrganizationConnector", name)),
        "Enabled": bool(spec.get("enabled", True)),
        "TargetAddressDomains": [str(d) for d in spec.get("targetAddressDomains", [])],
        "DiscoveryEndpoint": spec.get("discoveryEndpoint"),
        "TargetSharingEpr": spec.get("targetSharingEpr"),
        "AdminDisplayName": "",
        "IsValid": True,
    }


HYBRID_RECORDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "onPremisesOrganizations": onpremises_organization_record,
    "organizationRelationships": organization_relationship_record,
    "inboundConnectors": inbound_connector_record,
    "outboundConnectors": outbound_connector_record,
    "migrationEndpoints": migration_endpoint_record,
    "intraOrganizationConnectors": intraorganization_connector_record,
}


def load_hybrid(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The seed's "hybrid" entries as Exchange answers them; a kind the seed leaves out has no objects."""
    unknown = set(spec) - set(HYBRID_RECORDS)
    if unknown:
        raise ValueError(f"unknown hybrid object kinds {sorted(unknown)}; known: {sorted(HYBRID_RECORDS)}")
    return {kind: [build(entry) for entry in spec.get(kind, [])] for kind, build in HYBRID_RECORDS.items()}
