"""The synced groups and contacts the sweep can move to the cloud, and what it reads of each.

A kind names its Graph collection, the roles its reads and writes need, and its journal action. The source of
authority of one object is `onPremisesSyncBehavior.isCloudManaged` (docs/wire-protocols.md, "Source of
authority").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.auth import AUTHORITY_ROLES

__all__ = [
    "CONTACTS",
    "GROUPS",
    "KINDS",
    "MICROSOFT_365",
    "Kind",
    "SyncedObject",
    "cloud_managed",
    "group_type",
]

MICROSOFT_365 = "Microsoft 365 group"
SECURITY = "security group"
MAIL_ENABLED_SECURITY = "mail-enabled security group"
DISTRIBUTION = "distribution list"
CONTACT = "contact"


@dataclass(frozen=True)
class Kind:
    """One kind of synced object: where Graph lists it, what the sweep selects, the roles and the journal action."""

    name: str  # as ENFORCE_OBJECTS names it
    singular: str
    select: str
    list_role: str
    state_role: str  # reading onPremisesSyncBehavior has no Read.All role: Learn names ReadWrite even for GET
    action: str  # the journal's action for a change of its source of authority
    preview: bool  # Microsoft calls it a preview: the README and the report say so

    def state_url(self, object_id: str) -> str:
        return f"/{self.name}/{object_id}/onPremisesSyncBehavior"


GROUPS = Kind(
    "groups",
    "group",
    "id,displayName,mail,mailEnabled,securityEnabled,groupTypes,proxyAddresses,onPremisesSyncEnabled",
    "GroupMember.Read.All",
    AUTHORITY_ROLES["groups"],
    "group.isCloudManaged",
    False,
)
CONTACTS = Kind(
    "contacts",
    "contact",
    "id,displayName,mail,proxyAddresses,onPremisesSyncEnabled",
    "OrgContact.Read.All",
    AUTHORITY_ROLES["contacts"],
    "contact.isCloudManaged",
    True,
)
KINDS = {kind.name: kind for kind in (GROUPS, CONTACTS)}


@dataclass(frozen=True, slots=True)
class SyncedObject:
    """A listed synced group or contact: what the plan, the report and ENFORCE_EXCLUDE need of it."""

    id: str  # lower case
    name: str
    mail: str | None
    type: str  # security group, mail-enabled security group, distribution list, contact, Microsoft 365 group
    keys: frozenset[str]  # every ENFORCE_EXCLUDE entry that names it

    @classmethod
    def from_json(cls, data: dict[str, Any], kind: Kind) -> SyncedObject:
        object_id = str(data["id"]).lower()
        name = str(data.get("displayName") or object_id)
        mail = str(data["mail"]) if data.get("mail") else None
        keys = {object_id, "name:" + " ".join(name.split()).lower()}
        keys |= {mail.lower()} if mail else set()
        for address in data.get("proxyAddresses") or []:
            prefix, _, value = str(address).partition(":")
            if value and prefix.lower() == "smtp":
                keys.add(value.lower())
        return cls(object_id, name, mail, group_type(data) if kind is GROUPS else CONTACT, frozenset(keys))

    @property
    def mail_enabled(self) -> bool:
        return self.type in (MAIL_ENABLED_SECURITY, DISTRIBUTION)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.mail or self.id})"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "displayName": self.name, "mail": self.mail, "type": self.type}


def group_type(data: dict[str, Any]) -> str:
    """The kind of group by Graph's table: groupTypes, mailEnabled and securityEnabled."""
    if "Unified" in (data.get("groupTypes") or []):
        return MICROSOFT_365
    if data.get("mailEnabled") is True:
        return MAIL_ENABLED_SECURITY if data.get("securityEnabled") is True else DISTRIBUTION
    return SECURITY


def cloud_managed(body: Any) -> bool | None:
    """`isCloudManaged` from an onPremisesSyncBehavior answer, at the top level or inside `value` (Learn's example
    wraps it); None when it says neither, which is never taken for false."""
    if isinstance(body, dict) and isinstance(body.get("value"), dict):
        body = body["value"]
    value = body.get("isCloudManaged") if isinstance(body, dict) else None
    return value if isinstance(value, bool) else None
