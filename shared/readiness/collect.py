"""Read the tenant for the readiness report: listings and batches only, never a write.

Exchange: two paged listings (mailboxes, synced mail users), one $batch for the organization's settings and
the hybrid leftovers, and $batches of Get-MailboxStatistics for licensed shared mailboxes only. Graph: the
subscribed SKUs, three paged listings (users, synced groups, synced contacts) and $batches of 20 for the
source-of-authority state and nesting of each synced group and contact. Each part that fails is named in
`Inventory.errors`; the others still count.
"""

from __future__ import annotations

import contextvars
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from shared.authority.objects import cloud_managed
from shared.directory import BATCH_ROUNDS, GraphCall, GraphDirectory
from shared.enforcement import DIR_SYNCED_FILTER, TENANT_DEFAULT_PROPERTY, list_synced
from shared.errors import ExoprovError, PermissionDeniedError, ThrottledError, UnexpectedAnswerError, first_line
from shared.exchange import BATCH_LIMIT, BatchItem, Command, ExchangeClient
from shared.graph import GraphClient
from shared.mailbox_rules import RESOURCE_TYPES, size_bytes
from shared.readiness.inventory import (
    DirectoryObject,
    Inventory,
    MailboxFacts,
    MailUserFacts,
    OrgFacts,
    UserFacts,
    missing,
)

__all__ = ["CONTACT_STATE_VERSION", "HYBRID_COMMANDS", "Reader"]

log = logging.getLogger("exoprov.readiness")
T = TypeVar("T")

READINESS_MAILBOX_SELECT = (
    "ExternalDirectoryObjectId",
    "UserPrincipalName",
    "DisplayName",
    "PrimarySmtpAddress",
    "EmailAddresses",
    "RecipientTypeDetails",
    "IsDirSynced",
    "IsExchangeCloudManaged",
    "ArchiveGuid",
    "LitigationHoldEnabled",
    "InPlaceHolds",
    "ComplianceTagHoldApplied",
    "DelayHoldApplied",
)
MAIL_USER_SELECT = (
    "ExternalDirectoryObjectId",
    "UserPrincipalName",
    "DisplayName",
    "PrimarySmtpAddress",
    "ExchangeGuid",
    "RecipientTypeDetails",
    "IsDirSynced",
)
# The hybrid leftovers: cmdlet -> (kind shown in the report, properties to read).
# The first two properties name the object; the rest are shown as its detail.
HYBRID_COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Get-OnPremisesOrganization": ("on-premises organization", ("Identity", "Name", "HybridDomains")),
    "Get-OrganizationRelationship": ("organization relationship", ("Identity", "Name", "DomainNames", "Enabled")),
    "Get-InboundConnector": ("inbound connector", ("Identity", "Name", "ConnectorType", "ConnectorSource", "Enabled")),
    "Get-OutboundConnector": (
        "outbound connector",
        ("Identity", "Name", "ConnectorType", "ConnectorSource", "Enabled"),
    ),
    "Get-MigrationEndpoint": ("migration endpoint", ("Identity", "Identity", "EndpointType", "RemoteServer")),
    "Get-IntraOrganizationConnector": (
        "intra-organization connector",
        ("Identity", "Name", "TargetAddressDomains", "Enabled"),
    ),
}
# The wizard names its organization relationships after the direction and the on-premises organization's GUID.
HCW_RELATIONSHIP_PREFIXES = ("o365 to on-premises", "on-premises to o365")
GROUP_SELECT = "id,displayName,mail,mailEnabled,securityEnabled,groupTypes,onPremisesSyncEnabled"
CONTACT_SELECT = "id,displayName,mail,onPremisesSyncEnabled"
# Contacts' onPremisesSyncBehavior is a preview: in the v1.0 metadata, documented on beta only. Read on v1.0,
# and on beta when v1.0 does not know the segment (docs/wire-protocols.md, "The readiness report's Graph reads").
CONTACT_STATE_VERSION = "beta"
# The least privileged role of each read. The state reads have no Read.All role: Learn lists ReadWrite as the
# least privileged one even for GET, so a read-only report still needs it.
ROLES = {
    "users": "User.Read.All",
    "groups": "GroupMember.Read.All",
    "contacts": "OrgContact.Read.All",
    "group state": "Group-OnPremisesSyncBehavior.ReadWrite.All",
    "contact state": "Contacts-OnPremisesSyncBehavior.ReadWrite.All",
}


class Reader:
    """Reads an Inventory; `requests()` is what that cost, by service (retries included)."""

    def __init__(
        self,
        exchange: ExchangeClient,
        graph: GraphClient,
        directory: GraphDirectory,
        beta: GraphDirectory,
        graph_roles: frozenset[str],
    ) -> None:
        self.exchange = exchange
        self.graph = graph
        self.directory = directory
        self.beta = beta
        self.graph_roles = graph_roles  # the Graph token's roles: state is read only where the role was granted
        self._services = {"exchange": exchange.http, "graph": graph.http}
        self._started = {name: http.sent for name, http in self._services.items()}

    def requests(self) -> dict[str, int]:
        """Requests sent since this reader was made, by service (other threads of the process count too)."""
        return {name: http.sent - self._started[name] for name, http in self._services.items()}

    def read(self) -> Inventory:
        """Every part, the independent ones at once; the statistics need the mailboxes, users, SKUs and org first."""
        inventory = Inventory()
        parts: dict[str, Callable[[Inventory], None]] = {
            "mailboxes": self._mailboxes,
            "mail users": self._mail_users,
            "organization": self._organization,
            "users": self._users,
            "licenses": self._skus,
            "groups": self._groups,
            "contacts": self._contacts,
        }
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="readiness") as pool:
            # Each part runs in a copy of this context: its log lines keep the correlation id (and, on the host,
            # the invocation they belong to).
            submitted = [
                (part, pool.submit(contextvars.copy_context().run, read, inventory)) for part, read in parts.items()
            ]
            for part, future in submitted:
                _note(inventory, part, future.exception())
        if not {"mailboxes", "users", "licenses", "organization"} & set(inventory.errors):
            _note(inventory, "mailbox statistics", _attempt(lambda: self._statistics(inventory)))
        return inventory

    def _mailboxes(self, inventory: Inventory) -> None:
        command = Command("Get-Mailbox", {"ResultSize": "Unlimited"}, READINESS_MAILBOX_SELECT)
        inventory.mailboxes = self._listing(command, MailboxFacts.from_record, MailboxFacts.REQUIRED)

    def _mail_users(self, inventory: Inventory) -> None:
        command = Command("Get-MailUser", {"Filter": DIR_SYNCED_FILTER, "ResultSize": "Unlimited"}, MAIL_USER_SELECT)
        inventory.mail_users = self._listing(command, MailUserFacts.from_record, MailUserFacts.REQUIRED)

    def _listing(self, command: Command, parse: Callable[[dict[str, Any]], T], required: tuple[str, ...]) -> list[T]:
        """Every object of a listing, parsed; a record without a field the checks need fails the part, loudly."""
        lacking: Counter[str] = Counter()

        def add(found: list[T], record: dict[str, Any]) -> None:
            gaps = missing(record, required)
            if gaps:
                lacking.update(gaps)
            else:
                found.append(parse(record))

        listed = list_synced(self.exchange, list, add, command=command)
        if lacking:
            fields = ", ".join(f"{name} ({count})" for name, count in lacking.most_common())
            raise UnexpectedAnswerError(f"{command.cmdlet} answered objects without {fields}; nothing was assumed")
        return listed

    def _organization(self, inventory: Inventory) -> None:
        commands = [Command("Get-OrganizationConfig", {}, (TENANT_DEFAULT_PROPERTY, "InPlaceHolds"))]
        commands += [Command(name, {}, tuple(dict.fromkeys(select))) for name, (_, select) in HYBRID_COMMANDS.items()]
        config, *hybrid = self._exchange_batch(commands)
        if config.error or config.result is None:
            raise config.error or UnexpectedAnswerError("Get-OrganizationConfig gave no answer in its $batch")
        settings = (config.result.value or [{}])[0]
        value = settings.get(TENANT_DEFAULT_PROPERTY)
        holds = tuple(str(h) for h in settings.get("InPlaceHolds") or [] if str(h).lower().startswith("mbx"))
        leftovers: list[tuple[str, str, str]] = []
        failures = []
        answered = {item.command.cmdlet: item.result.value for item in hybrid if item.result is not None}
        hybrid_domains = {
            str(domain).lower()
            for record in answered.get("Get-OnPremisesOrganization", [])
            for domain in record.get("HybridDomains") or []
        }
        for item in hybrid:
            if item.error or item.result is None:
                failures.append(f"{item.command.cmdlet}: {first_line(item.error) if item.error else 'no answer'}")
                continue
            cmdlet = item.command.cmdlet
            leftovers += [entry for record in item.result.value if (entry := _leftover(cmdlet, record, hybrid_domains))]
        inventory.org = OrgFacts(value if isinstance(value, bool) else None, tuple(leftovers), holds)
        if failures:
            inventory.errors["hybrid configuration"] = "; ".join(failures)

    def _exchange_batch(self, commands: list[Command]) -> list[BatchItem]:
        """A $batch whose throttled items go again (the client already holds off for their Retry-After)."""
        items = self.exchange.batch(commands)
        for _ in range(BATCH_ROUNDS):
            throttled = [index for index, item in enumerate(items) if isinstance(item.error, ThrottledError)]
            if not throttled:
                break
            for index, item in zip(throttled, self.exchange.batch([commands[i] for i in throttled]), strict=True):
                items[index] = item
        return items

    def _users(self, inventory: Inventory) -> None:
        query = {"$select": "id,userPrincipalName,mail,assignedLicenses,onPremisesSyncEnabled"}
        users: dict[str, UserFacts] = {}
        for page in self.directory.pages("/users", query, role=ROLES["users"]):
            users.update((user.id, user) for user in map(UserFacts.from_json, page))
        inventory.users = users

    def _skus(self, inventory: Inventory) -> None:
        inventory.skus = {sku.sku_id: sku for sku in self.graph.skus()}

    def _groups(self, inventory: Inventory) -> None:
        """Every synced group (a page costs little); member groups and state only for the mail-enabled ones."""
        listed = self._synced("/groups", GROUP_SELECT, "groups")
        mail_enabled = [str(g["id"]) for g in listed if g.get("mailEnabled") is True]
        # A type cast is an advanced query: $count, and ConsistencyLevel in the item (a batch passes none on).
        reads = [
            GraphCall(
                f"{gid}/children",
                f"/groups/{gid}/members/microsoft.graph.group?$select=id&$count=true&$top=999",
                ROLES["groups"],
                {"ConsistencyLevel": "eventual"},
            )
            for gid in mail_enabled
        ]
        with_state = ROLES["group state"] in self.graph_roles
        if with_state:
            state = ROLES["group state"]
            reads += [GraphCall(f"{gid}/state", f"/groups/{gid}/onPremisesSyncBehavior", state) for gid in mail_enabled]
        answers = self._batched(self.directory, reads, "group")
        inventory.state_read = with_state and inventory.state_read
        groups = []
        for group in listed:
            gid = str(group["id"])
            children = self._all_members(answers.get(f"{gid}/children"))
            groups.append(
                DirectoryObject(
                    gid.lower(),
                    str(group.get("displayName") or gid),
                    group.get("mail") or None,
                    _group_kind(group),
                    cloud_managed(answers.get(f"{gid}/state")),
                    tuple(children or ()),
                    children_read=children is not None or gid not in mail_enabled,
                )
            )
        inventory.groups = groups

    def _all_members(self, body: Any) -> list[str] | None:
        """The member group ids of one batched read, following its nextLink; None when the read failed."""
        if not isinstance(body, dict):
            return None
        ids = [str(child["id"]).lower() for child in body.get("value") or [] if isinstance(child, dict)]
        link = body.get("@odata.nextLink")
        if isinstance(link, str) and link:
            for page in self.directory.follow(link, role=ROLES["groups"], advanced=True):
                ids += [str(child["id"]).lower() for child in page if child.get("id")]
        return ids

    def _contacts(self, inventory: Inventory) -> None:
        listed = self._synced("/contacts", CONTACT_SELECT, "contacts")
        answers: dict[str, Any] = {}
        if ROLES["contact state"] in self.graph_roles:
            state = ROLES["contact state"]
            reads = [GraphCall(str(c["id"]), f"/contacts/{c['id']}/onPremisesSyncBehavior", state) for c in listed]
            answers = self._batched(self.directory, reads, "contact state")
            if reads and not answers:
                log.info("v1.0 read no contact's onPremisesSyncBehavior; trying %s", CONTACT_STATE_VERSION)
                answers = self._batched(self.beta, reads, "contact state")
        else:
            inventory.state_read = False
        inventory.contacts = [
            DirectoryObject(
                str(c["id"]).lower(),
                str(c.get("displayName") or c["id"]),
                c.get("mail") or None,
                "contact",
                cloud_managed(answers.get(str(c["id"]))),
            )
            for c in listed
        ]

    def _synced(self, path: str, select: str, part: str) -> list[dict[str, Any]]:
        query = {"$filter": "onPremisesSyncEnabled eq true", "$select": select}
        found: list[dict[str, Any]] = []
        for page in self.directory.pages(path, query, role=ROLES[part], advanced=True):
            found += page
        return found

    def _batched(self, directory: GraphDirectory, reads: list[GraphCall], what: str) -> dict[str, Any]:
        """The bodies of the reads that succeeded, by key; the others are logged, and their objects say so."""
        answers = directory.batch(reads)
        failed = [answer.error for answer in answers.values() if answer.error]
        if failed:
            log.warning("%d of %d %s reads failed (%s)", len(failed), len(reads), what, first_line(failed[0]))
        return {key: answer.body for key, answer in answers.items() if answer.error is None}

    def _statistics(self, inventory: Inventory) -> None:
        """TotalItemSize of each licensed shared, room or equipment mailbox without archive or hold, 10 per batch."""
        org_holds = inventory.org.retention_holds if inventory.org else ()
        candidates = []
        for mailbox in inventory.mailboxes:
            user = inventory.users.get(mailbox.id)
            if mailbox.recipient_type not in RESOURCE_TYPES or not user or mailbox.license_needed(org_holds):
                continue
            if user.exchange_skus(inventory.skus):
                candidates.append(mailbox)
        for start in range(0, len(candidates), BATCH_LIMIT):
            chunk = candidates[start : start + BATCH_LIMIT]
            commands = [Command("Get-MailboxStatistics", {"Identity": m.id}, ("TotalItemSize",)) for m in chunk]
            for mailbox, item in zip(chunk, self._exchange_batch(commands), strict=True):
                if item.error or item.result is None:
                    if isinstance(item.error, PermissionDeniedError):
                        raise item.error
                    reason = first_line(item.error) if item.error else "no answer"
                    log.warning("the size of %s could not be read: %s", mailbox.label, reason)
                    inventory.sizes[mailbox.id] = None
                    continue
                inventory.sizes[mailbox.id] = size_bytes((item.result.value or [{}])[0].get("TotalItemSize"))


def _leftover(cmdlet: str, record: dict[str, Any], hybrid_domains: set[str]) -> tuple[str, str, str] | None:
    """(kind, identity, detail) when the record is a leftover of a hybrid configuration, else None.

    Partner connectors and sharing relationships with other organizations are not leftovers: they stay. A missing
    Enabled counts as enabled, so that an unexpected answer shows an object rather than hides it.
    """
    kind, properties = HYBRID_COMMANDS[cmdlet]
    identity = str(record.get("Identity") or record.get("Name") or "")
    if kind in ("inbound connector", "outbound connector") and str(record.get("ConnectorType") or "") != "OnPremises":
        return None
    if kind == "migration endpoint" and str(record.get("EndpointType") or "") != "ExchangeRemoteMove":
        return None
    if kind == "intra-organization connector" and record.get("Enabled") is False:
        return None  # Microsoft's advice is to disable it; a disabled one does no harm
    if kind == "organization relationship":
        domains = {str(domain).lower() for domain in record.get("DomainNames") or []}
        name = str(record.get("Name") or identity).lower()
        if not (name.startswith(HCW_RELATIONSHIP_PREFIXES) or domains & hybrid_domains):
            return None
    detail = ", ".join(f"{name} {_text(record[name])}" for name in properties[2:] if record.get(name) is not None)
    if kind.endswith(" connector") and "ConnectorSource" in record and record["ConnectorSource"] != "HybridWizard":
        # Made by hand (AdminUI): it may relay application mail, so it is for review, not for removal.
        detail = "not made by the wizard: review before removing it; " + detail
    return kind, identity, detail


def _text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _group_kind(group: dict[str, Any]) -> str:
    if group.get("mailEnabled") is True:
        return "mail-enabled security group" if group.get("securityEnabled") is True else "distribution group"
    return "security group"


def _attempt(read: Callable[[], None]) -> BaseException | None:
    try:
        read()
    except ExoprovError as exc:
        return exc
    return None


def _note(inventory: Inventory, part: str, error: BaseException | None) -> None:
    if error is None:
        return
    if not isinstance(error, ExoprovError):
        raise error
    log.warning("readiness: %s could not be read: %s", part, first_line(error))
    inventory.errors[part] = first_line(error)
