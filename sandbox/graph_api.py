"""Microsoft Graph as the sandbox serves it: the chain's user, subscribedSkus and assignLicense calls, and the
readiness report's directory reads (users, groups, contacts, group members, source of authority), the move of a
source of authority to the cloud and back (PATCH onPremisesSyncBehavior), and $batch.

Entra is eventually consistent, and so is this: a write is visible to reads only after the replication
lag, a user that a read just returned can still be unknown to a write, and assignLicense answers with the
user's default properties, never with its licenses (tests/contracts/graph/ holds the evidence). Listings are
paged for real, and queries that need Graph's advanced query parameters are refused without them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from sandbox.exchange_api import Reply
from sandbox.faults import Dice, Knobs, Stats
from sandbox.tenant import Contact, Group, Tenant, User, shown_cloud_managed, sync_enabled

# Which app roles allow which call (least privilege first); any one of them suffices.
ROLES = {
    "read": ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All"),
    "patch": ("User.ReadUpdate.All", "User.ReadWrite.All", "Directory.ReadWrite.All"),
    "license": ("LicenseAssignment.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All"),
    # Graph "List subscribedSkus": LicenseAssignment.ReadWrite.All is not among them.
    "skus": (
        "LicenseAssignment.Read.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
        "Organization.Read.All",
        "Organization.ReadWrite.All",
    ),
    "groups": ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All", "Group.ReadWrite.All"),
    "members": ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All", "GroupMember.ReadWrite.All"),
    "contacts": ("OrgContact.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    # There is no Read.All role for the source of authority, and no higher role either: reading takes ReadWrite.
    "groups authority": ("Group-OnPremisesSyncBehavior.ReadWrite.All",),
    "contacts authority": ("Contacts-OnPremisesSyncBehavior.ReadWrite.All",),
}
# users/{id or upn}, or users('{upn}') with apostrophes doubled as in any OData string literal.
USER_PATH = re.compile(r"^/v1\.0/users(?:/([^/()]+)|\('((?:[^']|'')+)'\))(/assignLicense)?$")
# What GET /users/{id} returns without $select, and what assignLicense answers with.
DEFAULT_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
AUTHORITY_PATH = re.compile(r"^/v1\.0/(groups|contacts)/([^/]+)/onPremisesSyncBehavior$")
MEMBER_GROUPS_PATH = re.compile(r"^/v1\.0/groups/([^/]+)/members/microsoft\.graph\.group$")
MEMBERS_PATH = re.compile(r"^/v1\.0/groups/([^/]+)/members$")
OBJECT_PATH = re.compile(r"^/v1\.0/(groups|contacts)/([^/]+)$")
# What GET groups/{id}/members may $select (every member type has some of them; a member shows those it has).
MEMBER_PROPERTIES = (
    "id",
    "displayName",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
    "mail",
    "userPrincipalName",
)
# The only $filter the sandbox evaluates: onPremisesSyncEnabled compared with a literal, possibly under not().
SYNC_FILTER = re.compile(r"^\s*(not\s*\(\s*)?(\w+)\s+(eq|ne)\s+(true|false|null)\s*(\)?)\s*$", re.IGNORECASE)
MAX_PAGE = 999  # directory listings: default 100, at most 999 (List users, List groups, List group members)
MAX_BATCH = 20  # JSON batching: "currently limited to 20 individual requests"
SAFE_IN_QUERY = "$,()'"  # left as they are in nextLinks, as Graph's own links show them
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
NOT_ALLOWED = "Specified HTTP method is not allowed for the request target."
WRITE_ITEM_METHODS = frozenset({"POST", "PATCH", "PUT"})
# Graph's batch validation, quoted in pnp/pnpcore's Teams code: a write item needs a Content-Type header and a body
# (Learn's JSON batching: "When the body is supplied, a Content-Type header must be included.").
NO_CONTENT_TYPE = "Write request id : {} does not contain Content-Type header or body."
ADVANCED_ONLY = (
    "Operator '{}' is not supported because the required parameters might be missing. Try adding $count=true query "
    "parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more "
    "information"
)
# What a $batch item carries in `headers` (Learn's JSON batching example): a JSON answer, an error answer.
ITEM_HEADERS = {
    "Cache-Control": "no-cache",
    "x-ms-resource-unit": "1",
    "OData-Version": "4.0",
    "Content-Type": (
        "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
    ),
}
ITEM_ERROR_HEADERS = {"Cache-Control": "no-cache", "x-ms-resource-unit": "1", "Content-Type": "application/json"}


@dataclass(frozen=True)
class Call:
    """One Graph request, or one item of a $batch: what the sandbox needs to answer it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    body: Any
    roles: tuple[str, ...]
    headers: Mapping[str, str]  # names in lower case
    origin: str  # scheme://host the caller reached, for nextLinks
    version: str = "v1.0"  # the version the caller named; `path` is always written with /v1.0/ to route it

    def param(self, name: str) -> str:
        return self.query.get(name, [""])[0]

    @property
    def root(self) -> str:
        return f"https://graph.microsoft.com/{self.version}"

    @property
    def advanced(self) -> bool:
        """Whether the call has Graph's advanced query parameters: ConsistencyLevel eventual and $count=true."""
        return self.headers.get("consistencylevel", "").lower() == "eventual" and self.param("$count") == "true"


@dataclass(frozen=True)
class Collection:
    """A directory collection as Graph names it in contexts, errors and roles."""

    name: str  # URL segment and @odata.context entity set: users, groups, contacts
    entity: str  # its type, named in "Could not find a property" errors
    resource: str  # its name in Request_UnsupportedQuery errors
    defaults: tuple[str, ...]  # what a listing without $select returns
    properties: tuple[str, ...]  # everything the sandbox knows of it, so everything $select may name


USERS = Collection(
    "users",
    "microsoft.graph.user",
    "User",
    DEFAULT_PROPERTIES,
    (
        *DEFAULT_PROPERTIES,
        "usageLocation",
        "accountEnabled",
        "onPremisesSyncEnabled",
        "onPremisesSecurityIdentifier",
        "assignedLicenses",
        "licenseAssignmentStates",
    ),
)
GROUP_DEFAULTS = ("id", "displayName", "description", "groupTypes", "mail", "mailEnabled", "mailNickname")
GROUPS = Collection(
    "groups",
    "microsoft.graph.group",
    "Group",
    (*GROUP_DEFAULTS, "securityEnabled", "proxyAddresses", "onPremisesSyncEnabled"),
    (*GROUP_DEFAULTS, "securityEnabled", "proxyAddresses", "onPremisesSyncEnabled", "onPremisesSecurityIdentifier"),
)
CONTACT_DEFAULTS = ("id", "displayName", "givenName", "surname", "companyName", "mail", "mailNickname")
CONTACTS = Collection(
    "contacts",
    "microsoft.graph.orgContact",
    "OrgContact",
    (*CONTACT_DEFAULTS, "proxyAddresses", "onPremisesSyncEnabled"),
    (*CONTACT_DEFAULTS, "proxyAddresses", "onPremisesSyncEnabled"),
)
COLLECTIONS = {f"/v1.0/{c.name}": c for c in (USERS, GROUPS, CONTACTS)}
COLLECTION_ROLES = {"users": "read", "groups": "groups", "contacts": "contacts"}


def graph_operation(path: str) -> str:
    """The operation a Graph path names, for statistics: user, users, assignLicense, groups/onPremisesSyncBehavior..."""
    segments = [s for s in path.split("?")[0].split("/") if s][1:]  # without the version
    if not segments:
        return "root"
    if segments[0].startswith("users("):
        return "assignLicense" if segments[-1] == "assignLicense" else "user"
    if len(segments) == 1:
        return segments[0]  # a collection, subscribedSkus or $batch
    if segments[-1] == "assignLicense":
        return "assignLicense"
    if len(segments) == 2:
        return segments[0].rstrip("s")  # one user, group or contact
    return f"{segments[0]}/{segments[2]}"  # groups/members, contacts/onPremisesSyncBehavior ...


def call_kind(method: str, path: str) -> str:
    """How the statistics count a call: "read: GET groups", "write: PATCH user", "batch: POST $batch"."""
    operation = graph_operation(path)
    if operation == "$batch":
        kind = "batch"  # its items are counted one by one, as reads or writes
    else:
        kind = "write" if method.upper() in WRITE_METHODS else "read"
    return f"{kind}: {method.upper()} {operation}"


class GraphApi:
    """Serves the Graph calls of the chain and of the readiness report for one tenant."""

    def __init__(
        self, tenant: Tenant, knobs: Knobs | None = None, stats: Stats | None = None, dice: Dice | None = None
    ) -> None:
        self.tenant = tenant
        self.knobs = knobs or Knobs()
        self.stats = stats or Stats()
        self.dice = dice or Dice(self.knobs.seed)
        self._call = threading.local()  # the caller's client-request-id, echoed in errors as Graph does

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        roles: list[str],
        request_id: str = "",
        headers: Mapping[str, str] | None = None,
        origin: str = "http://127.0.0.1",
    ) -> Reply:
        self._call.request_id = request_id
        lowered = {name.lower(): value for name, value in (headers or {}).items()}
        # beta serves the same reads (Learn documents onPremisesSyncBehavior there first); one router for both.
        version, _, rest = path.lstrip("/").partition("/")
        return self._route(Call(method.upper(), f"/v1.0/{rest}", query, body, tuple(roles), lowered, origin, version))

    def _route(self, call: Call) -> Reply:
        """Answer one call; a $batch item comes here too, with its own method, URL and headers."""
        if call.path == "/v1.0/$batch":
            return self._batch(call) if call.method == "POST" else self._error(405, "Request_BadRequest", NOT_ALLOWED)
        directory = self._directory(call)
        if directory is not None:
            return directory
        return self._chain(call.method, call.path, dict(call.query), call.body, list(call.roles))

    def _directory(self, call: Call) -> Reply | None:
        """The readiness report's reads, or None when the path is not one of them."""
        collection = COLLECTIONS.get(call.path)
        authority = AUTHORITY_PATH.match(call.path)
        member_groups = MEMBER_GROUPS_PATH.match(call.path)
        members = MEMBERS_PATH.match(call.path)
        single = OBJECT_PATH.match(call.path)
        if collection is None and authority is None and member_groups is None and members is None and single is None:
            return None
        self.tenant.settle_authority()  # a sync cycle that has come takes rolled-back objects over before any read
        if authority is not None and call.method == "PATCH":
            kind, key = authority.group(1), unquote(authority.group(2))
            return self._allowed(call.roles, f"{kind} authority") or self._change_authority(call, kind, key)
        if call.method != "GET":
            return self._error(405, "Request_BadRequest", NOT_ALLOWED)
        if members is not None:
            return self._allowed(call.roles, "members") or self._members(call, unquote(members.group(1)))
        if single is not None:
            kind, key = single.group(1), unquote(single.group(2))
            return self._allowed(call.roles, COLLECTION_ROLES[kind]) or self._object(call, kind, key)
        if collection is not None:
            return self._allowed(call.roles, COLLECTION_ROLES[collection.name]) or self._list(
                call, collection, *self._rows(collection), call.path
            )
        if authority is not None:
            kind, key = authority.group(1), unquote(authority.group(2))
            return self._allowed(call.roles, f"{kind} authority") or self._authority(call, kind, key)
        assert member_groups is not None
        return self._allowed(call.roles, "members") or self._member_groups(call, unquote(member_groups.group(1)))

    def _chain(self, method: str, path: str, query: dict[str, list[str]], body: Any, roles: list[str]) -> Reply:
        """The chain's calls: subscribedSkus, and a user read, usage-location write or license assignment."""
        if path == "/v1.0/subscribedSkus" and method == "GET":
            return self._allowed(roles, "skus") or Reply.json(
                200,
                {
                    "@odata.context": f"{GRAPH_ROOT}/$metadata#subscribedSkus",
                    "value": [_sku_json(s) for s in self.tenant.skus],
                },
            )
        match = USER_PATH.match(path)
        if not match:
            return self._error(404, "Request_ResourceNotFound", f"Resource not found for the segment '{path}'.")
        key = unquote(match.group(1)) if match.group(1) else unquote(match.group(2)).replace("''", "'")
        if match.group(3):
            return self._allowed(roles, "license") or self._assign(key, body)
        if method == "GET":
            return self._allowed(roles, "read") or self._get(key, query.get("$select", [""])[0])
        if method == "PATCH":
            return self._allowed(roles, "patch") or self._patch(key, body)
        return self._error(405, "Request_BadRequest", f"{method} is not supported here.")

    # -- the readiness report's directory reads ---------------------------------------------------------

    def _rows(self, collection: Collection) -> tuple[list[Any], Callable[[Any], dict[str, Any]]]:
        """Every object of a collection in a stable order (pages do not overlap), and how Graph shows one."""
        with self.tenant.lock:
            if collection is USERS:
                return list(self.tenant.visible_users()), self._user_json
            if collection is GROUPS:
                return list(self.tenant.groups.values()), _group_json
            return list(self.tenant.contacts.values()), _contact_json

    def _list(
        self,
        call: Call,
        collection: Collection,
        objects: list[Any],
        show: Callable[[Any], dict[str, Any]],
        path: str,
    ) -> Reply:
        """One page of a directory listing, reading $filter, $select, $top, $count and $skiptoken as Graph does."""
        top = self._page_size(call)
        keep = self._filter(call, collection)
        offset = self._offset(call, path)
        for refusal in (top, keep, offset):
            if isinstance(refusal, Reply):
                return refusal
        assert isinstance(top, int) and isinstance(offset, int) and callable(keep)
        selected = _names(call.param("$select"))
        bad_select = self._unknown_property(collection.entity, collection.properties, selected)
        if bad_select is not None:
            return bad_select
        names = selected or collection.defaults
        # Only a filter needs every object shown; a plain listing shows the page it serves (tenants are large).
        rows = [show(o) for o in objects] if call.param("$filter") else objects
        matching = [row for row in rows if keep(row)] if call.param("$filter") else rows
        context = f"{call.root}/$metadata#{collection.name}" + (f"({','.join(selected)})" if selected else "")
        payload: dict[str, Any] = {"@odata.context": context}
        if call.advanced:
            payload["@odata.count"] = len(matching)  # without both advanced parameters Graph ignores $count=true
        if offset + top < len(matching):
            payload["@odata.nextLink"] = self._next_link(call, path, offset + top)
        page = matching[offset : offset + top]
        shown = page if call.param("$filter") else [show(o) for o in page]
        payload["value"] = [{name: row[name] for name in names} for row in shown]
        return Reply.json(200, payload)

    def _page_size(self, call: Call) -> int | Reply:
        raw = call.param("$top")
        if not raw:
            return 100
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
            return self._error(
                400,
                "Request_UnsupportedQuery",
                f"Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive.",
            )
        return int(raw)

    def _filter(self, call: Call, collection: Collection) -> Callable[[dict[str, Any]], bool] | Reply:
        """The $filter as a predicate; only onPremisesSyncEnabled is filterable here, and ne, not and null only in
        advanced queries (Learn's table of directory object properties)."""
        text = call.param("$filter")
        if not text:
            return lambda row: True
        match = SYNC_FILTER.match(text)
        if (
            match is None
            or match.group(2).lower() != "onpremisessyncenabled"
            or bool(match.group(1)) != bool(match.group(5))
        ):
            prop = match.group(2) if match else re.split(r"[\s(]", text.strip(), maxsplit=1)[0]
            return self._unsupported_clause(prop, collection)
        negated, operator, literal = bool(match.group(1)), match.group(3).lower(), match.group(4).lower()
        if not call.advanced and (negated or operator == "ne"):
            return self._error(400, "Request_UnsupportedQuery", ADVANCED_ONLY.format("not" if negated else "ne"))
        if not call.advanced and literal == "null":
            return self._unsupported_clause("onPremisesSyncEnabled", collection)
        wanted = {"true": True, "false": False, "null": None}[literal]

        def keep(row: dict[str, Any]) -> bool:
            same = row["onPremisesSyncEnabled"] is wanted
            return (same if operator == "eq" else not same) != negated

        return keep

    def _unsupported_clause(self, prop: str, collection: Collection) -> Reply:
        return self._error(
            400,
            "Request_UnsupportedQuery",
            f"Unsupported or invalid query filter clause specified for property '{prop}' of resource "
            f"'{collection.resource}'.",
        )

    def _offset(self, call: Call, path: str) -> int | Reply:
        """Where a $skiptoken continues; it is only good for the query that produced it."""
        token = call.param("$skiptoken")
        if not token:
            return 0
        try:
            offset_text, fingerprint = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")
            offset = int(offset_text)
        except ValueError:  # binascii.Error, UnicodeDecodeError and a bad split are all ValueErrors
            offset, fingerprint = -1, ""
        if offset < 0 or fingerprint != _fingerprint(call, path):
            # Unverified: what Graph answers a token replayed with another query; the sandbox refuses it loudly.
            return self._error(400, "Request_BadRequest", "The skip token is not valid for this request.")
        return offset

    def _next_link(self, call: Call, path: str, offset: int) -> str:
        """The whole URL of the next page: every parameter of this one plus a $skiptoken (Learn's "Paging")."""
        token = base64.urlsafe_b64encode(f"{offset}:{_fingerprint(call, path)}".encode()).decode().rstrip("=")
        params = [(name, value) for name, values in call.query.items() if name != "$skiptoken" for value in values]
        params.append(("$skiptoken", token))
        origin = self.knobs.nextlink_origin or call.origin  # a fault: a link to a host the client must not trust
        query = urlencode(params, quote_via=quote, safe=SAFE_IN_QUERY)
        return f"{origin}/{call.version}{path.removeprefix('/v1.0')}?{query}"

    def _directory_object(self, kind: str, key: str) -> Group | Contact | None:
        objects: dict[str, Any] = self.tenant.groups if kind == "groups" else self.tenant.contacts
        exact: Group | Contact | None = objects.get(key)  # by id first: a generated tenant can hold 10,000 groups
        if exact is not None:
            return exact
        return next((found for found in objects.values() if found.id.lower() == key.lower()), None)

    def _unknown_property(self, entity: str, known: Container[str], selected: Iterable[str]) -> Reply | None:
        """Graph's refusal of a $select naming a property the type `entity` does not have, or None."""
        unknown = [name for name in selected if name not in known]
        if not unknown:
            return None
        message = f"Could not find a property named '{unknown[0]}' on type '{entity}'."
        return self._error(400, "Request_BadRequest", message)

    def _object(self, call: Call, kind: str, key: str) -> Reply:
        """GET {groups|contacts}/{id}?$select=...: one object (Learn "Get group", "Get orgContact"); 404 when gone."""
        found = self._directory_object(kind, key)
        if found is None:
            return self._not_found(key)
        collection = GROUPS if kind == "groups" else CONTACTS
        selected = _names(call.param("$select"))
        refusal = self._unknown_property(collection.entity, collection.properties, selected)
        if refusal is not None:
            return refusal
        row = _group_json(found) if isinstance(found, Group) else _contact_json(found)
        context = f"{call.root}/$metadata#{kind}" + (f"({','.join(selected)})" if selected else "") + "/$entity"
        return Reply.json(200, {"@odata.context": context, **{n: row[n] for n in selected or collection.defaults}})

    def _authority(self, call: Call, kind: str, key: str) -> Reply:
        """GET {groups|contacts}/{id}/onPremisesSyncBehavior: whether the object's source of authority is the cloud.

        A cloud-born object answers isCloudManaged false, like a synced one (Entra's Group SOA table)."""
        found = self._directory_object(kind, key)
        if found is None:
            return self._not_found(key)
        selected = _names(call.param("$select"))
        refusal = self._unknown_property("microsoft.graph.onPremisesSyncBehavior", ("id", "isCloudManaged"), selected)
        if refusal is not None:
            return refusal
        # For authority_read_lag seconds after a PATCH a read still shows the old value (third-party scripts re-read up
        # to 6 x 2 s; nothing documents a lag, so it is off by default).
        entity = {"id": found.id, "isCloudManaged": shown_cloud_managed(found, self.tenant.clock())}
        if self.knobs.graph_sync_behavior_wrapped:
            # The shape of Learn's example answer, which no capture confirms: a client must read both.
            return Reply.json(200, {"value": {"@odata.type": "#microsoft.graph.onPremisesSyncBehavior", **entity}})
        names = selected or ("id", "isCloudManaged")
        context = f"{call.root}/$metadata#{kind}('{found.id}')/onPremisesSyncBehavior"
        context += (f"({','.join(selected)})" if selected else "") + "/$entity"
        return Reply.json(200, {"@odata.context": context, **{name: entity[name] for name in names}})

    def _change_authority(self, call: Call, kind: str, key: str) -> Reply:
        """PATCH {groups|contacts}/{id}/onPremisesSyncBehavior {"isCloudManaged": bool}: 204, or 200 with the entity
        under knob graph_sync_behavior_patch_200 (the current beta page says 204, an earlier version 200)."""
        body = call.body
        allowed = {"isCloudManaged", "@odata.type"}
        if not isinstance(body, dict) or not isinstance(body.get("isCloudManaged"), bool) or set(body) - allowed:
            # Unverified refusal (no error of this endpoint is documented); the product always sends a JSON boolean,
            # while Microsoft's own sample script sends the string "true".
            return self._error(
                400,
                "Request_BadRequest",
                "Invalid value for property 'isCloudManaged' of type 'microsoft.graph.onPremisesSyncBehavior': "
                "a JSON boolean is required.",
            )
        found = self._directory_object(kind, key)
        if found is None:
            return self._not_found(key)
        if found.name in self.knobs.authority_refused:
            # A fault for the client's sake (an object this run cannot change), not a documented refusal.
            self.stats.count("faults", "authority_refused")
            return self._error(400, "Request_BadRequest", f"Fault injected: {found.name} refuses this change.")
        outcome = self.tenant.change_authority(
            kind,
            found,
            body["isCloudManaged"],
            cycle=self.knobs.sync_cycle_seconds,
            read_lag=self.knobs.authority_read_lag,
        )
        if outcome == "cloud-born":
            noun = "group" if kind == "groups" else "contact"
            return self._error(
                400,
                "Request_BadRequest",
                f"The source of authority of a {noun} that is not synchronized from on-premises cannot be changed.",
            )
        if not self.knobs.graph_sync_behavior_patch_200:
            return Reply(204)
        entity = {
            "@odata.type": "#microsoft.graph.onPremisesSyncBehavior",
            "id": found.id,
            "isCloudManaged": found.cloud_managed,
        }
        return Reply.json(200, entity)

    def _members(self, call: Call, key: str) -> Reply:
        """GET groups/{id}/members: the direct members (users, groups, contacts), each with its @odata.type."""
        group = self._directory_object("groups", key)
        if not isinstance(group, Group):
            return self._not_found(key)
        if group.name in self.knobs.members_unreadable:
            # A fault for the client's sake: one group whose members cannot be read (a 503 without Retry-After).
            self.stats.count("faults", "members_unreadable")
            return self._error(503, "UnknownError", "Fault injected: the members of this group cannot be read now.")
        if call.param("$filter"):
            # Learn allows some member filters in advanced queries; the sandbox serves none, loudly.
            return self._error(
                400,
                "Request_UnsupportedQuery",
                "The specified filter to the reference property query is currently not supported.",
            )
        top = self._page_size(call)
        offset = self._offset(call, call.path)
        for refusal in (top, offset):
            if isinstance(refusal, Reply):
                return refusal
        assert isinstance(top, int) and isinstance(offset, int)
        selected = _names(call.param("$select"))
        bad_select = self._unknown_property("microsoft.graph.directoryObject", MEMBER_PROPERTIES, selected)
        if bad_select is not None:
            return bad_select
        with self.tenant.lock:
            members = self.tenant.member_objects(group)
        context = f"{call.root}/$metadata#directoryObjects" + (f"({','.join(selected)})" if selected else "")
        payload: dict[str, Any] = {"@odata.context": context}
        if call.advanced:
            payload["@odata.count"] = len(members)
        if offset + top < len(members):
            payload["@odata.nextLink"] = self._next_link(call, call.path, offset + top)
        payload["value"] = [self._member_json(m, selected) for m in members[offset : offset + top]]
        return Reply.json(200, payload)

    def _member_json(self, member: User | Group | Contact, selected: tuple[str, ...]) -> dict[str, Any]:
        """One member as a listing of directoryObjects shows it: its type, then the selected properties it has."""
        if isinstance(member, User):
            kind, known = USERS, self._user_json(member)
        elif isinstance(member, Group):
            kind, known = GROUPS, _group_json(member)
        else:
            kind, known = CONTACTS, _contact_json(member)
        names = selected or kind.defaults  # without $select each member comes with its own type's defaults
        return {"@odata.type": f"#{kind.entity}", **{n: known[n] for n in names if n in known}}

    def _member_groups(self, call: Call, key: str) -> Reply:
        """GET groups/{id}/members/microsoft.graph.group: the groups directly nested in a group."""
        group = self._directory_object("groups", key)
        if not isinstance(group, Group):
            return self._not_found(key)
        if not call.advanced:
            # Learn's List group members: ConsistencyLevel and $count "are required when using ... OData cast". Some
            # clients are answered without them; the sandbox holds to the documented, stricter reading.
            return self._error(400, "Request_UnsupportedQuery", ADVANCED_ONLY.format("cast"))
        if call.param("$filter"):
            return self._error(
                400,
                "Request_UnsupportedQuery",
                "The specified filter to the reference property query is currently not supported.",
            )
        if "Unified" in group.group_types:
            # Documented code (Microsoft 365 groups cannot hold groups); the text is unverified.
            return self._error(400, "Request_UnsupportedQuery", "Microsoft 365 groups cannot have groups as members.")
        with self.tenant.lock:
            by_key = {name.lower(): g for g in self.tenant.groups.values() for name in (g.id, g.name)}
            members = [by_key[m.lower()] for m in group.members if m.lower() in by_key]
        return self._list(call, GROUPS, members, _group_json, call.path)

    # -- JSON batching ---------------------------------------------------------------------------------

    def _batch(self, call: Call) -> Reply:
        """POST $batch: each item answered as its own call; the batch answers 200 whatever its items answer."""
        requests = call.body.get("requests") if isinstance(call.body, dict) else None
        problem = _batch_problem(requests) or _write_item_problem(requests)
        if problem or not isinstance(requests, list):
            self._count_refused_writes(requests)
            return self._error(400, "BadRequest", problem)
        answers = [self._batch_item(call, item) for item in requests]
        # Graph does not keep the request order: rotating makes a client that relies on positions fail here.
        return Reply.json(200, {"responses": answers[1:] + answers[:1]})

    def _batch_item(self, call: Call, item: dict[str, Any]) -> dict[str, Any]:
        """One item of a $batch: its URL is relative to the version the batch was sent to."""
        method, url = item["method"].upper(), item["url"]
        relative, _, query_text = url.lstrip("/").partition("?")
        path = "/v1.0/" + relative
        self.stats.count("graph_calls", call_kind(method, path))
        first = relative.split("/", 1)[0]
        if first in ("v1.0", "beta") or ":" in first:
            # A version (or a whole URL) in an item is just an unknown first segment under the batch's version.
            return _item(item["id"], self._error(400, "BadRequest", f"Resource not found for the segment '{first}'."))
        if path == "/v1.0/$batch":
            return _item(item["id"], self._error(400, "BadRequest", "A $batch item cannot be a $batch."))
        key = f"$batch item {method} {url}"  # a throttled item must not come back before its Retry-After
        self.stats.check_retry_after(key)
        if self.dice.roll(self.knobs.graph_batch_item_429_rate):
            return self._throttled_item(item["id"], key)
        raw_headers = item.get("headers")
        headers = {str(k).lower(): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        query = parse_qs(query_text, keep_blank_values=True)
        item_call = Call(method, path, query, item.get("body"), call.roles, headers, call.origin, call.version)
        reply = self._route(item_call)
        if (
            method in WRITE_METHODS
            and reply.status < 300
            and self.dice.roll(self.knobs.graph_batch_item_503_after_write_rate)
        ):
            # Applied, then lost on the way back: the client cannot know the outcome and must read the object again.
            self.stats.count("faults", "graph_batch_item_503_after_write")
            return {"id": item["id"], "status": 503, "headers": dict(ITEM_ERROR_HEADERS), "body": unavailable_body()}
        return _item(item["id"], reply)

    def _count_refused_writes(self, requests: Any) -> None:
        """A batch refused whole runs nothing, yet its write items were attempted: graphWrites must see them."""
        for item in requests if isinstance(requests, list) else []:
            method, url = (item.get("method"), item.get("url")) if isinstance(item, dict) else (None, None)
            if isinstance(method, str) and isinstance(url, str) and method.upper() in WRITE_METHODS:
                self.stats.count("graph_calls", call_kind(method, "/v1.0/" + url.lstrip("/").partition("?")[0]))

    def _throttled_item(self, item_id: str, key: str) -> dict[str, Any]:
        """An item refused by throttling: 429 and a Retry-After of its own, in the item's headers."""
        self.stats.count("faults", "graph_batch_item_429")
        with self.stats.lock:
            self.stats.throttled += 1
        headers = {"Cache-Control": "no-cache", "Content-Type": "application/json"}
        if not self.knobs.omit_retry_after:
            self.stats.remember_retry_after(key, self.knobs.retry_after)
            headers["Retry-After"] = f"{self.knobs.retry_after:g}"
        return {"id": item_id, "status": 429, "headers": headers, "body": throttled_body()}

    # -- common ------------------------------------------------------------------------------------------

    def _allowed(self, roles: Iterable[str], kind: str) -> Reply | None:
        if set(roles) & set(ROLES[kind]):
            return None
        return self._error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _user(self, key: str, *, write: bool = False) -> User | None:
        """The user a read (or, later by the replication lag, a write) can see."""
        now = self.tenant.clock()
        for user in self.tenant.users.values():
            if key.lower() in (user.id.lower(), user.upn.lower()):
                return user if (user.writable_at if write else user.visible_at) <= now else None
        return None

    def _get(self, key: str, select: str) -> Reply:
        user = self._user(key)
        if user is None:
            return self._not_found(key)
        selected = [n.strip() for n in select.split(",") if n.strip()]
        names = tuple(selected) if selected else DEFAULT_PROPERTIES
        known = self._user_json(user)
        refusal = self._unknown_property("microsoft.graph.user", known, names)
        if refusal is not None:
            return refusal
        context = f"{GRAPH_ROOT}/$metadata#users" + (f"({','.join(names)})" if select else "") + "/$entity"
        return Reply.json(200, {"@odata.context": context, **{n: known[n] for n in names}})

    def _patch(self, key: str, body: Any) -> Reply:
        user = self._user(key, write=True)
        if user is None:
            return self._not_found(key)
        if not isinstance(body, dict) or set(body) - {"usageLocation"}:
            return self._error(400, "Request_BadRequest", "Only usageLocation can be changed in the sandbox.")
        with self.tenant.lock:
            user.replicate("usageLocation", user.usage_location, self.tenant.clock(), self.tenant.replication_lag)
            user.usage_location = body["usageLocation"]
        return Reply(204)

    def _assign(self, key: str, body: Any) -> Reply:
        user = self._user(key, write=True)
        if user is None:
            return self._not_found(key)
        body = body if isinstance(body, dict) else {}
        missing = [name for name in ("addLicenses", "removeLicenses") if not isinstance(body.get(name), list)]
        if missing:
            return self._error(
                400,
                "Request_BadRequest",
                "One or more parameters of the operation 'assignLicense' are "
                f"missing from the request payload. The missing parameters are: {', '.join(missing)}.",
            )
        with self.tenant.lock:
            refused = self._refusal(user, body)
            if refused:
                return refused
            for item in body["addLicenses"]:
                self.tenant.assign_license(user, str(item["skuId"]).lower(), list(item.get("disabledPlans") or []))
            for sku_id in body["removeLicenses"]:
                self.tenant.remove_license(user, str(sku_id).lower())
        # A 200 means "accepted": the answer is the user's default properties, without its licenses.
        return Reply.json(
            200,
            {
                "@odata.context": f"{GRAPH_ROOT}/$metadata#users/$entity",
                **_pick(self._user_json(user), DEFAULT_PROPERTIES),
            },
        )

    def _refusal(self, user: User, body: dict[str, Any]) -> Reply | None:
        """Why assignLicense refuses this body, checked the way another replica sees the user."""
        now = self.tenant.clock()
        for item in body["addLicenses"]:
            sku_id = str(item.get("skuId", "")).lower() if isinstance(item, dict) else ""
            sku = self.tenant.sku(sku_id)
            if sku is None:
                return self._error(
                    400, "Request_BadRequest", f"License {sku_id} does not correspond to a valid company License."
                )
            if not user.replicated("usageLocation", user.usage_location, now):
                return self._error(
                    400, "Request_BadRequest", "License assignment cannot be done for user with invalid usage location."
                )
            free = int(sku.get("prepaidUnits", {}).get("enabled", 0)) - int(sku.get("consumedUnits", 0))
            if sku_id not in user.licenses and free <= 0:
                return self._error(
                    400, "Request_BadRequest", f"Subscription with SKU {sku_id} does not have any available licenses."
                )
        for sku_id in (str(s).lower() for s in body["removeLicenses"]):
            assignment = user.licenses.get(sku_id)
            if assignment is None:
                return self._error(400, "Request_BadRequest", "User does not have a corresponding license.")
            if assignment.inherited:
                return self._error(
                    400,
                    "Request_BadRequest",
                    "User license is inherited from a group membership and it cannot be removed directly "
                    "from the user.",
                )
        return None

    def _user_json(self, user: User) -> dict[str, Any]:
        """Every property the sandbox knows, as a read sees it now (writes still replicating are not shown)."""
        group = "3f1c0a55-0000-4000-8000-0000000000aa"
        now = self.tenant.clock()
        licenses = user.replicated("licenses", user.licenses, now).values()
        return {
            "businessPhones": [],
            "displayName": user.display_name,
            "givenName": None,
            "jobTitle": None,
            "mail": user.mail,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "surname": None,
            "userPrincipalName": user.upn,
            "id": user.id,
            "usageLocation": user.replicated("usageLocation", user.usage_location, now),
            "accountEnabled": user.account_enabled,
            "onPremisesSyncEnabled": True if user.dir_synced else None,
            "onPremisesSecurityIdentifier": _sid(user.id) if user.dir_synced else None,
            "assignedLicenses": [{"disabledPlans": a.disabled_plans, "skuId": a.sku_id} for a in licenses],
            "licenseAssignmentStates": [
                {
                    "assignedByGroup": group if a.inherited else None,
                    "disabledPlans": a.disabled_plans,
                    "error": "None",
                    "lastUpdatedDateTime": "2026-01-05T09:30:00Z",
                    "skuId": a.sku_id,
                    "state": "Active",
                }
                for a in licenses
            ],
        }

    def _not_found(self, key: str) -> Reply:
        return self._error(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
        )

    def _error(self, status: int, code: str, message: str) -> Reply:
        inner = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": str(uuid.uuid4()),
            "client-request-id": getattr(self._call, "request_id", "") or str(uuid.uuid4()),
        }
        return Reply.json(status, {"error": {"code": code, "message": message, "innerError": inner}})


def _pick(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: data[name] for name in names}


def _sku_json(sku: dict[str, Any]) -> dict[str, Any]:
    return {
        "accountId": sku.get("accountId", "7a1c2f3e-0000-4000-8000-0000000000a1"),
        "accountName": sku.get("accountName", "Contoso"),
        "appliesTo": "User",
        "capabilityStatus": "Enabled",
        "consumedUnits": int(sku.get("consumedUnits", 0)),
        "id": f"7a1c2f3e-0000-4000-8000-0000000000a1_{sku['skuId']}",
        "prepaidUnits": {"enabled": 0, "lockedOut": 0, "suspended": 0, "warning": 0, **sku.get("prepaidUnits", {})},
        "servicePlans": [{"provisioningStatus": "Success", **plan} for plan in sku.get("servicePlans", [])],
        "skuId": sku["skuId"],
        "skuPartNumber": sku["skuPartNumber"],
        "subscriptionIds": [sku.get("subscriptionId", "5f0e3f1a-0000-4000-8000-0000000000b2")],
    }


def _names(select: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in select.split(",") if name.strip())


def _sid(object_id: str) -> str:
    """A stable, made-up on-premises SID for an object that came from AD (it keeps it after a conversion)."""
    return f"S-1-5-21-1004336348-1177238915-682003330-{int(hashlib.sha256(object_id.encode()).hexdigest()[:6], 16)}"


def _group_json(group: Group) -> dict[str, Any]:
    return {
        "id": group.id,
        "displayName": group.name,
        "description": None,
        "groupTypes": list(group.group_types),
        "mail": group.mail,
        "mailEnabled": group.mail is not None,
        "mailNickname": (group.mail or group.name).split("@")[0],
        "securityEnabled": group.security_enabled,
        # Graph's group and orgContact both carry proxyAddresses ("SMTP:" marks the primary); one address here.
        "proxyAddresses": [f"SMTP:{group.mail}"] if group.mail else [],
        "onPremisesSyncEnabled": sync_enabled(group),
        "onPremisesSecurityIdentifier": _sid(group.id) if group.dir_synced else None,
    }


def _contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "displayName": contact.name,
        "givenName": None,
        "surname": None,
        "companyName": None,
        "mail": contact.mail,
        "mailNickname": (contact.mail or contact.name).split("@")[0],
        "proxyAddresses": [f"SMTP:{contact.mail}"] if contact.mail else [],
        "onPremisesSyncEnabled": sync_enabled(contact),
    }


def _fingerprint(call: Call, path: str) -> str:
    """What a $skiptoken is bound to: the path and every other parameter of the query."""
    params = sorted((name, value) for name, values in call.query.items() if name != "$skiptoken" for value in values)
    return hashlib.sha256(repr((path, params)).encode()).hexdigest()[:16]


def _batch_problem(requests: Any) -> str:
    """Why a $batch body is refused as a whole (400), or "" when its items can be answered one by one."""
    if not isinstance(requests, list) or not requests:
        return "Invalid batch payload format."
    if len(requests) > MAX_BATCH:
        # Unverified text: Learn says only that a batch holds at most 20 requests and that a malformed one is a 400.
        return f"The batch holds {len(requests)} requests; at most {MAX_BATCH} are allowed."
    if not all(
        isinstance(item, dict) and all(isinstance(item.get(k), str) and item[k] for k in ("id", "method", "url"))
        for item in requests
    ):
        return "Invalid batch payload format."
    ids = [item["id"].lower() for item in requests]  # ids are not case-sensitive and must be unique
    return "" if len(set(ids)) == len(ids) else "The batch holds the same request id twice."


def _write_item_problem(requests: Any) -> str:
    """Why a batch with a write item lacking its Content-Type header or body is refused whole, or ""."""
    for item in requests if isinstance(requests, list) else []:
        if item["method"].upper() not in WRITE_ITEM_METHODS:
            continue
        headers = item.get("headers")
        names = {str(name).lower() for name in headers} if isinstance(headers, dict) else set()
        if "content-type" not in names or item.get("body") is None:
            return NO_CONTENT_TYPE.format(item["id"])
    return ""


def _item(item_id: str, reply: Reply) -> dict[str, Any]:
    """A sub-answer of a $batch: its status, its headers and the body a single call would have had."""
    headers = dict(ITEM_HEADERS if reply.status < 400 else ITEM_ERROR_HEADERS)
    headers.update({name: value for name, value in reply.headers.items() if name.lower() == "retry-after"})
    answer: dict[str, Any] = {"id": item_id, "status": reply.status, "headers": headers}
    if reply.body:
        answer["body"] = json.loads(reply.body)
    return answer


def unavailable_body() -> dict[str, Any]:
    """The body of the sandbox's Graph 503 (the server's graph_fault_503_rate answers the same)."""
    return {"error": {"code": "serviceNotAvailable", "message": "Service unavailable."}}


def throttled_body() -> dict[str, Any]:
    """Graph's documented 429 body (tests/contracts/graph/graph.error.throttled.json)."""
    inner = {
        "code": "429",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "message": "Please retry after",
        "request-id": str(uuid.uuid4()),
        "status": "429",
    }
    return {"error": {"code": "TooManyRequests", "message": "Please retry again later.", "innerError": inner}}
