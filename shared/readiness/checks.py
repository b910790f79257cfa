"""The ten checks of the readiness report: pure functions from an Inventory to a Check.

Each check names the parts of the inventory it reads; when one of them could not be read, the check says so
(status `manual`, with the error) instead of passing on missing data. docs/readiness.md explains each check
and the evidence behind its advice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shared.mailbox_rules import RESOURCE_TYPES, SHARED_LICENSE_FREE_BYTES
from shared.readiness.inventory import DirectoryObject, Inventory, MailboxFacts, UserFacts
from shared.readiness.model import CHECK_IDS, Check, Finding, Status, Tally

__all__ = ["SweepScope", "run_checks", "tally"]

USER_TYPES = ("UserMailbox",)
TYPE_KIND = {
    "UserMailbox": "user mailbox",
    "SharedMailbox": "shared mailbox",
    "RoomMailbox": "room mailbox",
    "EquipmentMailbox": "equipment mailbox",
}
CONNECT_VERSIONS = (
    "Check by hand on each sync server (exoprov cannot read them): cloud-managed Exchange attributes need Entra "
    "Connect Sync 2.5.190.0 or later (Cloud Sync agent 1.1.1107.0 or later for writeback to AD); group source of "
    "authority needs Connect Sync 2.5.76.0 or Cloud Sync 1.1.1370.0; contact source of authority (preview) needs "
    "Connect Sync 2.5.79.0. Older clients overwrite cloud changes at the next sync."
)


@dataclass(frozen=True)
class SweepScope:
    """What the sweep would change (ENFORCE_RECIPIENT_TYPES, ENFORCE_EXCLUDE), so a finding can say so."""

    types: frozenset[str]
    exclude: frozenset[str]


def run_checks(inventory: Inventory, scope: SweepScope) -> tuple[Check, ...]:
    """Every check, in the report's order."""
    checks = {
        "mailboxes-not-cloud-managed": lambda: _mailboxes_not_cloud_managed(inventory, scope),
        "tenant-default": lambda: _tenant_default(inventory),
        "synced-mail-users": lambda: _synced_mail_users(inventory),
        "synced-contacts": lambda: _synced_contacts(inventory),
        "synced-groups": lambda: _synced_groups(inventory),
        "unlicensed-user-mailboxes": lambda: _unlicensed_user_mailboxes(inventory),
        "licensed-shared-mailboxes": lambda: _licensed_shared_mailboxes(inventory),
        "primary-address-drift": lambda: _primary_address_drift(inventory),
        "hybrid-configuration": lambda: _hybrid_configuration(inventory),
        "sync-client-version": _sync_client_version,
    }
    assert tuple(checks) == CHECK_IDS
    return tuple(_guarded(check_id, build, inventory) for check_id, build in checks.items())


NEEDS: dict[str, tuple[str, ...]] = {
    "mailboxes-not-cloud-managed": ("mailboxes",),
    "tenant-default": ("organization", "mail users"),
    "synced-mail-users": ("mail users",),
    "synced-contacts": ("contacts",),
    "synced-groups": ("groups",),
    "unlicensed-user-mailboxes": ("mailboxes", "users", "licenses"),
    "licensed-shared-mailboxes": ("mailboxes", "users", "licenses", "organization", "mailbox statistics"),
    "primary-address-drift": ("mailboxes", "users"),
    "hybrid-configuration": ("organization", "hybrid configuration"),
    "sync-client-version": (),
}
TITLES = {
    "mailboxes-not-cloud-managed": "Mailboxes still managed from on-premises",
    "tenant-default": "Tenant-wide default for new mailboxes",
    "synced-mail-users": "Directory-synced mail users",
    "synced-contacts": "Directory-synced mail contacts",
    "synced-groups": "Directory-synced mail-enabled groups",
    "unlicensed-user-mailboxes": "User mailboxes without an Exchange license",
    "licensed-shared-mailboxes": "Shared and resource mailboxes holding a license they do not need",
    "primary-address-drift": "Primary address differs from Entra's mail",
    "hybrid-configuration": "Hybrid configuration leftovers",
    "sync-client-version": "Sync client versions",
}


def _guarded(check_id: str, build: Callable[[], Check], inventory: Inventory) -> Check:
    """The check, or a `manual` one naming what could not be read: missing data must never look like a pass."""
    missing = [f"{part}: {inventory.errors[part]}" for part in NEEDS[check_id] if part in inventory.errors]
    if missing:
        return Check(
            check_id,
            TITLES[check_id],
            "manual",
            (),
            "Could not be checked; grant what the error names (exoprov doctor) and run the report again.",
            "; ".join(missing),
        )
    return build()


def _check(check_id: str, bad: Status, objects: Iterable[Finding], advice: str, ok: str) -> Check:
    """`bad` when there are objects, else pass with the `ok` advice."""
    found = tuple(objects)
    return Check(check_id, TITLES[check_id], bad if found else "pass", found, advice if found else ok)


def _mailbox_finding(mailbox: MailboxFacts, detail: str) -> Finding:
    return Finding(mailbox.id, mailbox.label, TYPE_KIND.get(mailbox.recipient_type, mailbox.recipient_type), detail)


def _mailboxes_not_cloud_managed(inventory: Inventory, scope: SweepScope) -> Check:
    findings = []
    for mailbox in inventory.mailboxes:
        if not mailbox.dir_synced or mailbox.cloud_managed:
            continue
        if mailbox.exclusion_keys & scope.exclude:
            detail = "excluded from the sweep (ENFORCE_EXCLUDE)"
        elif mailbox.recipient_type not in scope.types:
            detail = "outside the sweep's ENFORCE_RECIPIENT_TYPES"
        else:
            detail = "the next apply sweep makes it cloud-managed"
        findings.append(_mailbox_finding(mailbox, detail))
    return _check(
        "mailboxes-not-cloud-managed",
        "fail",
        findings,
        "Run `exoprov sweep --apply` (or set ENFORCE_MODE=apply): it sets IsExchangeCloudManaged on each "
        "mailbox in scope. Until then these mailboxes' Exchange attributes can only be changed on-premises.",
        "Every directory-synced mailbox is cloud-managed.",
    )


def _tenant_default(inventory: Inventory) -> Check:
    org = inventory.org
    remote = [m for m in inventory.mail_users if m.has_mailbox_guid]
    if org is None or org.default_cloud_managed is None:
        return Check(
            "tenant-default",
            TITLES["tenant-default"],
            "manual",
            (),
            "Get-OrganizationConfig gave no BlockExchangeProvisioningFromOnPremEnabled; check the setting by hand.",
        )
    if not org.default_cloud_managed and remote:
        return Check(
            "tenant-default",
            TITLES["tenant-default"],
            "pass",
            (),
            "Off, as it must be while mailboxes are still on-premises (see synced-mail-users): leave it off until "
            "they have moved and no mailbox, mail user or remote mailbox is created on-premises any more.",
        )
    if not org.default_cloud_managed:
        return Check(
            "tenant-default",
            TITLES["tenant-default"],
            "warn",
            (),
            "Off: mailboxes of newly synced users start managed from on-premises, so the sweep keeps having work. "
            "Once no mailbox, mail user or remote mailbox is created on-premises any more, turn it on with "
            "`Set-OrganizationConfig -ExchangeAttributesCloudManagedByDefault`.",
        )
    findings = [
        Finding(m.id, m.name, "mail user", f"ExchangeGuid {m.exchange_guid}: its mailbox may still be on-premises")
        for m in remote
    ]
    return _check(
        "tenant-default",
        "fail",
        findings,
        "On too early: it is not supported while mailboxes are still created or hosted on-premises (their "
        "mailboxes can go missing from the cloud address book). Migrate these mailboxes first, or turn the default "
        "off with `Set-OrganizationConfig -ExchangeAttributesServerManagedByDefault`; turning it off does not "
        "repair objects already affected (Microsoft Support does). Remote mailboxes created on-premises after it was "
        "turned on may arrive without their Exchange attributes, so this list can be short of them.",
        "On, and no synced mail user points at an on-premises mailbox.",
    )


def _synced_mail_users(inventory: Inventory) -> Check:
    findings = [
        Finding(
            m.id,
            m.name,
            "mail user",
            f"ExchangeGuid {m.exchange_guid}: likely a mailbox still on-premises; migrate it"
            if m.has_mailbox_guid
            else "no per-object switch: its Exchange attributes stay managed in AD",
        )
        for m in inventory.mail_users
    ]
    status: Status = "fail" if any(m.has_mailbox_guid for m in inventory.mail_users) else "warn"
    return _check(
        "synced-mail-users",
        status,
        sorted(findings, key=lambda f: not f.detail.startswith("ExchangeGuid")),
        "Mail users have no IsExchangeCloudManaged: keep managing them with the Exchange Management Tools "
        "on-premises, or recreate them in the cloud. Those with an ExchangeGuid are remote mailboxes whose mailbox "
        "has likely not moved to Exchange Online yet.",
        "No directory-synced mail users.",
    )


def _on_premises_managed(objects: list[DirectoryObject]) -> list[DirectoryObject]:
    return [o for o in objects if o.cloud_managed is not True]


def _state(obj: DirectoryObject) -> str:
    # Listed as synced means managed in AD; the state read (optional) only adds "not converting yet".
    return "synced from AD" if obj.cloud_managed is None else "synced from AD, not converting"


def _synced_contacts(inventory: Inventory) -> Check:
    left = [c for c in _on_premises_managed(inventory.contacts) if c.mail]
    return _check(
        "synced-contacts",
        "warn",
        (Finding(c.id, c.name, "contact", f"{c.mail}; {_state(c)}") for c in left),
        "Move their source of authority to the cloud with Graph (onPremisesSyncBehavior isCloudManaged, a preview "
        "feature for contacts; the sweep does it with ENFORCE_OBJECTS=contacts), or keep managing them in AD with "
        "the Exchange Management Tools.",
        "No mail contact is still managed in AD.",
    )


def _synced_groups(inventory: Inventory) -> Check:
    by_id = {g.id: g for g in inventory.groups}
    ordered = _children_first(inventory.groups)
    position = {group.id: index for index, group in enumerate(ordered)}
    left = [g for g in ordered if g.mail_enabled and g.cloud_managed is not True]
    findings = []
    for group in left:
        children = [by_id[c] for c in group.child_groups if c in by_id and by_id[c].cloud_managed is not True]
        detail = _state(group)
        if children:
            detail += "; move its member groups first: " + ", ".join(child.name for child in children)
        if any(position[child.id] > position[group.id] for child in children):
            detail += " (they are nested in each other: break the cycle in AD first)"
        if not group.children_read:
            detail += "; its member groups could not be read, so check them by hand before moving it"
        findings.append(Finding(group.id, group.name, group.kind, detail))
    return _check(
        "synced-groups",
        "warn",
        findings,
        "Move their source of authority to the cloud with Graph (onPremisesSyncBehavior isCloudManaged), in the "
        "order listed: a conversion is not recursive, so member groups go first. A mail-enabled group is then "
        "managed in Exchange Online and is not written back to AD. The sweep does it, children first, with "
        "ENFORCE_OBJECTS=groups and ENFORCE_MAIL_ENABLED_GROUPS=true.",
        "No mail-enabled group is still managed in AD.",
    )


def _children_first(groups: list[DirectoryObject]) -> list[DirectoryObject]:
    """Groups ordered so that each comes after the groups nested in it; a cycle (AD allows one) is cut."""
    by_id = {g.id: g for g in groups}
    ordered: list[DirectoryObject] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    for root in sorted(groups, key=lambda g: g.name.lower()):
        stack = [(root.id, iter(root.child_groups))]
        state.setdefault(root.id, 1)
        if state[root.id] == 2:
            continue
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c in by_id and state.get(c) is None), None)
            if child is None:
                stack.pop()
                state[node] = 2
                ordered.append(by_id[node])
            else:
                state[child] = 1
                stack.append((child, iter(by_id[child].child_groups)))
    return ordered


def _user_of(inventory: Inventory, mailbox: MailboxFacts) -> UserFacts | None:
    return inventory.users.get(mailbox.id)


def _unlicensed_user_mailboxes(inventory: Inventory) -> Check:
    findings = []
    for mailbox in inventory.mailboxes:
        if mailbox.recipient_type not in USER_TYPES:
            continue
        user = _user_of(inventory, mailbox)
        if user is None:
            findings.append(_mailbox_finding(mailbox, "its Entra user was not found"))
        elif not user.exchange_skus(inventory.skus):
            findings.append(_mailbox_finding(mailbox, "no license with an enabled Exchange Online plan"))
    return _check(
        "unlicensed-user-mailboxes",
        "fail",
        findings,
        "Data at risk: an unlicensed user mailbox is deleted after its 30-day grace period. License it, or convert "
        "it to a shared mailbox if nobody signs in to it.",
        "Every user mailbox has an Exchange Online license.",
    )


def _licensed_shared_mailboxes(inventory: Inventory) -> Check:
    findings = []
    org_holds = inventory.org.retention_holds if inventory.org else ()
    for mailbox in inventory.mailboxes:
        if mailbox.recipient_type not in RESOURCE_TYPES:
            continue
        user = _user_of(inventory, mailbox)
        skus = user.exchange_skus(inventory.skus) if user else []
        if not skus or mailbox.license_needed(org_holds) or mailbox.id not in inventory.sizes:
            continue
        names = ", ".join(sorted(sku.part_number for sku in skus))
        size = inventory.sizes[mailbox.id]
        if size is None:
            findings.append(_mailbox_finding(mailbox, f"{names}; no archive, no hold; its size could not be read"))
        elif size < SHARED_LICENSE_FREE_BYTES:
            findings.append(_mailbox_finding(mailbox, f"{names}; {size / 1024**3:.1f} GB, no archive, no hold"))
    return _check(
        "licensed-shared-mailboxes",
        "warn",
        findings,
        "These need no license (under 50 GB, no archive, no hold): removing it saves one license each. "
        "A mailbox with an archive, a hold or over 50 GB keeps its license and is not listed.",
        "No shared or resource mailbox holds a license it does not need.",
    )


def _primary_address_drift(inventory: Inventory) -> Check:
    findings = []
    for mailbox in inventory.mailboxes:
        if not (mailbox.dir_synced and mailbox.cloud_managed):
            continue
        user = _user_of(inventory, mailbox)
        if user and user.mail and user.mail.lower() != mailbox.primary_smtp.lower():
            detail = f"Exchange {mailbox.primary_smtp}, Entra mail {user.mail}"
            findings.append(_mailbox_finding(mailbox, detail))
    return _check(
        "primary-address-drift",
        "warn",
        findings,
        "Entra's mail (synced from AD) and the mailbox's primary address disagree. The on-premises mail attribute "
        "has been seen to steer the primary address even of a cloud-managed mailbox, so a change made in one place "
        "only may be undone at the next sync: align the two, starting in AD.",
        "Each cloud-managed mailbox's primary address matches Entra's mail.",
    )


def _hybrid_configuration(inventory: Inventory) -> Check:
    leftovers = inventory.org.hybrid if inventory.org else ()
    return _check(
        "hybrid-configuration",
        "warn",
        (Finding(identity, identity, kind, detail) for kind, identity, detail in leftovers),
        "Leftovers of the Hybrid Configuration Wizard. Once MX and Autodiscover point at Exchange Online and no "
        "mailbox is left to move: remove the two connectors and the organization relationship, disable the "
        "intra-organization connector, remove the migration endpoint, and run Remove-HybridConfiguration on "
        "premises. Keep the Exchange Management Tools for recipient management. A connector not made by the wizard "
        "may relay application mail: review it before removing it.",
        "No hybrid configuration is left in Exchange Online.",
    )


def _sync_client_version() -> Check:
    return Check("sync-client-version", TITLES["sync-client-version"], "manual", (), CONNECT_VERSIONS)


def tally(inventory: Inventory) -> tuple[Tally, ...]:
    """Objects by kind and by where they are managed: the report's chart."""
    bars = []
    for recipient_type, kind in TYPE_KIND.items():
        boxes = [m for m in inventory.mailboxes if m.recipient_type == recipient_type]
        bars.append(
            Tally(
                kind + "es",
                cloud_managed=sum(1 for m in boxes if m.dir_synced and m.cloud_managed),
                on_premises=sum(1 for m in boxes if m.dir_synced and not m.cloud_managed),
                cloud_only=sum(1 for m in boxes if not m.dir_synced),
            )
        )
    bars.append(Tally("mail users", 0, len(inventory.mail_users)))
    for kind, objects in (
        ("groups", [g for g in inventory.groups if g.mail_enabled]),
        ("contacts", inventory.contacts),
    ):
        cloud = sum(1 for o in objects if o.cloud_managed is True)
        bars.append(Tally(kind, cloud, len(objects) - cloud))
    return tuple(bars)
