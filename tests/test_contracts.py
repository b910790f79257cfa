"""Contract tests: what Exchange, Graph and the identity endpoint really answer, as public evidence shows.

Each document in tests/contracts/ holds one answer of a real service (our own values, the real shape) and
names its evidence. Two checks per document: the clients parse it as they must, and the sandbox answers
the same call with the same shape (the same keys, the same types, no extra convenient field), so the
sandbox, the only judge of the clients here, cannot drift back to what is convenient for us.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3

from shared import errors
from shared.auth import token_failure
from shared.errors import (
    CONTRACT_CODES,
    AuthenticationError,
    BadRequestError,
    CallContext,
    ConfigurationError,
    ExoprovError,
    InvalidRequestError,
    LicenseError,
    LicenseInheritedError,
    NoLicensesError,
    NotFoundError,
    PermanentError,
    PermissionDeniedError,
    ThrottledError,
    UnexpectedAnswerError,
    UnknownCmdletError,
    UsageLocationError,
    WriteScopeError,
    result_code,
)
from shared.exchange import APP_ANCHOR, Command, _result, batch_items, map_error
from shared.graph import USER_SELECT as USER_SELECT_FIELDS
from shared.graph import GraphUser, Sku, map_graph_error
from shared.http import Response, _is_throttle, parse_retry_after
from shared.mailbox_rules import has_archive
from shared.wiring import Clients
from tests.conftest import ROOT, SandboxHandle

CONTRACTS = Path(__file__).parent / "contracts"
DOCUMENTS = {path.stem: json.loads(path.read_text()) for path in sorted(CONTRACTS.glob("*/*.json"))}
EXCHANGE = "https://outlook.office365.com"
GRAPH = "https://graph.microsoft.com"
SYNCED_WITH_MAILBOX = "UserWithMailWithEXO@contoso.com"
SELECT = "ExternalDirectoryObjectId,UserPrincipalName,RecipientTypeDetails,IsDirSynced,IsExchangeCloudManaged"
USER_SELECT = ",".join(USER_SELECT_FIELDS)
STANDARD = "4b9405b0-7788-4568-add1-99614e613b69"
FRESH_TOKEN_CLAIMS = '{"access_token":{"nbf":{"essential":true}}}'
ENTERPRISE = "19ec0d23-8335-4cbd-94ac-6050e30712fa"


@dataclass
class Answer:
    """What came back over the wire."""

    status: int
    headers: dict[str, str]
    raw: bytes

    def body(self) -> Any:
        text = self.raw.strip(b"\x00")
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text.decode()


# -- shapes -------------------------------------------------------------------------------------------


def shape_differences(actual: Any, expected: Any, path: str = "body") -> list[str]:
    """Where `actual` differs from `expected` in keys or JSON types; null matches any type (fields are nullable)."""
    if expected is None or actual is None:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        problems = [f"{path}: extra key {key!r}" for key in sorted(set(actual) - set(expected))]
        problems += [f"{path}: missing key {key!r}" for key in sorted(set(expected) - set(actual))]
        for key in sorted(set(actual) & set(expected)):
            problems += shape_differences(actual[key], expected[key], f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected an array, got {type(actual).__name__}"]
        if not expected:
            return []
        # Items of one kind are all compared with the first; a list of mixed items (a $batch) item by item.
        pairs = (
            zip(actual, expected, strict=True) if len(actual) == len(expected) else ((a, expected[0]) for a in actual)
        )
        return [
            p for index, (item, model) in enumerate(pairs) for p in shape_differences(item, model, f"{path}[{index}]")
        ]
    if _json_type(actual) != _json_type(expected):
        return [f"{path}: expected {_json_type(expected)}, got {_json_type(actual)} ({actual!r})"]
    return []


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_sandbox_matches(document_id: str, answer: Answer) -> None:
    """The sandbox's answer has the status, the relied-on headers and the body shape of the contract."""
    document = DOCUMENTS[document_id]
    assert answer.status == document["status"], f"{document_id}: HTTP {answer.status}, {answer.raw[:300]!r}"
    headers = {k.lower(): v for k, v in answer.headers.items()}
    for name, value in (document.get("headers") or {}).items():
        if name.lower() in ("content-type", "request-id"):
            assert name.lower() in headers or name.lower() == "request-id", f"{document_id}: no {name} header"
            continue
        assert name.lower() in headers, f"{document_id}: the sandbox sends no {name} header"
        if name.lower() == "content-encoding":
            assert headers[name.lower()] == value
    if document.get("bodyBytes"):
        assert answer.raw and not answer.raw.strip(b"\x00"), f"{document_id}: expected a NUL-filled body"
        return
    problems = shape_differences(answer.body(), document["body"])
    assert problems == [], f"{document_id}: the sandbox's answer has another shape than the service's:\n" + "\n".join(
        problems
    )
    assert isinstance(answer.body(), type(document["body"])) or document["body"] is None


# -- talking to the sandbox as a client would -------------------------------------------------------


class Wire:
    """Raw calls to the sandbox with the app's real tokens, so that nothing of the client shapes the answer."""

    def __init__(self, sandbox: SandboxHandle, clients: Clients) -> None:
        self.sandbox = sandbox
        self.clients = clients
        self.tenant = clients.exchange().tenant_id
        self._http = urllib3.PoolManager(retries=False)

    def send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        resource = GRAPH if path.startswith("/v1.0") else EXCHANGE
        token = self.clients.tokens.get(resource).value
        all_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "client-request-id": "5d0c9a3e-1111-4222-8333-944455556666",
            **(headers or {}),
        }
        raw = self._http.request(
            method,
            f"{self.sandbox.url}{path}",
            body=json.dumps(body) if body is not None else None,
            headers=all_headers,
            decode_content=False,
        )
        return Answer(raw.status, dict(raw.headers), raw.data)

    def invoke(self, cmdlet: str, parameters: dict[str, Any], select: str = "", **headers: str) -> Answer:
        query = f"?$select={select}" if select else ""
        return self.send(
            "POST",
            f"/adminapi/beta/{self.tenant}/InvokeCommand{query}",
            {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}},
            {"X-AnchorMailbox": APP_ANCHOR % self.tenant, **headers},
        )

    def user_id(self, upn: str) -> str:
        answer = self.send("GET", f"/v1.0/users/{upn}?$select=id")
        return str(answer.body()["id"])

    def batch(self, commands: list[tuple[str, dict[str, Any], str]]) -> Answer:
        """One Exchange $batch of (cmdlet, parameters, $select) items, numbered 0, 1, ... as the client numbers them."""
        requests = [
            {
                "id": str(index),
                "method": "POST",
                "url": f"{self.sandbox.url}/adminapi/beta/{self.tenant}/InvokeCommand{_query(select)}",
                "headers": {"X-AnchorMailbox": APP_ANCHOR % self.tenant, "X-CmdletName": cmdlet},
                "body": {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}},
            }
            for index, (cmdlet, parameters, select) in enumerate(commands)
        ]
        return self.send(
            "POST",
            f"/adminapi/beta/{self.tenant}/$batch",
            {"requests": requests},
            {"X-AnchorMailbox": APP_ANCHOR % self.tenant},
        )

    def reseed(self, seed: dict[str, Any]) -> None:
        """Reset the sandbox to `seed`; a reset signs tokens anew, so fresh ones are fetched for both services.

        A claims challenge is passed, as after a service's 401, so that azure-identity skips its own token cache.
        """
        self.sandbox.reset(seed)
        for resource in (EXCHANGE, GRAPH):
            self.clients.tokens.get(resource, refresh=True, claims=FRESH_TOKEN_CLAIMS)


@pytest.fixture
def wire(sandbox: SandboxHandle, clients: Clients) -> Wire:
    return Wire(sandbox, clients)


def _assign(wire: Wire, upn: str, add: list[dict[str, Any]], remove: list[str] | None = None) -> Answer:
    body: dict[str, Any] = {"addLicenses": add}
    if remove is not None:
        body["removeLicenses"] = remove
    return wire.send("POST", f"/v1.0/users/{wire.user_id(upn)}/assignLicense", body)


def _concurrency_refusal(wire: Wire) -> Answer:
    wire.sandbox.knobs(concurrency_limit=1, latency=0.6)
    slow = threading.Thread(target=wire.invoke, args=("Get-OrganizationConfig", {}))
    slow.start()
    time.sleep(0.2)
    try:
        return wire.invoke("Get-OrganizationConfig", {})
    finally:
        slow.join()


def _query(select: str) -> str:
    return f"?$select={select}" if select else ""


def _batch(wire: Wire) -> Answer:
    def item(item_id: str, identity: str) -> dict[str, Any]:
        return {
            "id": item_id,
            "method": "POST",
            "url": f"{wire.sandbox.url}/adminapi/beta/{wire.tenant}/InvokeCommand?$select={SELECT}",
            "headers": {"X-AnchorMailbox": APP_ANCHOR % wire.tenant, "X-CmdletName": "Get-Mailbox"},
            "body": {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"Identity": identity}}},
        }

    return wire.send(
        "POST",
        f"/adminapi/beta/{wire.tenant}/$batch",
        {"requests": [item("a1", SYNCED_WITH_MAILBOX), item("a2", "ghost.user@contoso.com")]},
        {"X-AnchorMailbox": APP_ANCHOR % wire.tenant, "Prefer": "odata.continue-on-error"},
    )


def _token(wire: Wire, client_id: str = "") -> Answer:
    env = wire.sandbox.env
    query = f"?resource={GRAPH}&api-version=2019-08-01" + (f"&client_id={client_id}" if client_id else "")
    raw = urllib3.request(
        "GET", env["IDENTITY_ENDPOINT"] + query, headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
    )
    return Answer(raw.status, dict(raw.headers), raw.data)


def _archived_mailbox(wire: Wire) -> Answer:
    wire.sandbox.add_user(
        upn="archived@contoso.com", licenses=["EXCHANGESTANDARD"], mailboxType="User", archive=True, usageLocation="DE"
    )
    select = SELECT + ",ArchiveDatabase,ArchiveDatabaseGuid,ArchiveGuid,ArchiveName,ArchiveDomain,ArchiveStatus"
    select += ",ArchiveState,ArchiveQuota,ArchiveWarningQuota,AutoExpandingArchiveEnabled"
    return wire.invoke("Get-Mailbox", {"Identity": "archived@contoso.com"}, select)


def _inherited(wire: Wire) -> Answer:
    wire.sandbox.knobs(replication_lag=0)  # a user created now is writable at once: the answer is the refusal
    wire.sandbox.add_user(
        upn="grouped@contoso.com", licenses=["EXCHANGESTANDARD"], licenseInherited=True, usageLocation="DE"
    )
    return _assign(wire, "grouped@contoso.com", [], [STANDARD])


# What the readiness report selects (docs/wire-protocols.md, "The readiness report's reads").
HYBRID_SELECT = {
    "Get-OnPremisesOrganization": "Identity,Name,Guid,OrganizationGuid,OrganizationName,HybridDomains,"
    "InboundConnector,OutboundConnector,OrganizationRelationship",
    "Get-OrganizationRelationship": "Identity,Name,Enabled,DomainNames,TargetSharingEpr,TargetOwaURL,"
    "FreeBusyAccessEnabled,MailboxMoveEnabled",
    "Get-InboundConnector": "Identity,Name,Guid,Enabled,ConnectorType,ConnectorSource,SenderDomains,"
    "TlsSenderCertificateName",
    "Get-OutboundConnector": "Identity,Name,Guid,Enabled,ConnectorType,ConnectorSource,RecipientDomains,SmartHosts,"
    "TlsDomain",
    "Get-MigrationEndpoint": "Identity,EndpointType,RemoteServer",
    "Get-IntraOrganizationConnector": "Identity,Name,Enabled,TargetAddressDomains,DiscoveryEndpoint,TargetSharingEpr",
}
READINESS_MAILBOX_SELECT = (
    "ExternalDirectoryObjectId,UserPrincipalName,DisplayName,PrimarySmtpAddress,EmailAddresses,RecipientTypeDetails,"
    "IsDirSynced,IsExchangeCloudManaged,ArchiveGuid,LitigationHoldEnabled,InPlaceHolds,ComplianceTagHoldApplied,"
    "DelayHoldApplied"
)
READINESS_MAIL_USER_SELECT = (
    "ExternalDirectoryObjectId,UserPrincipalName,DisplayName,PrimarySmtpAddress,ExchangeGuid,RecipientTypeDetails,"
    "IsDirSynced"
)
STATISTICS_SELECT = "DisplayName,MailboxGuid,ItemCount,TotalItemSize"
DIR_SYNCED = "IsDirSynced -eq 'True'"


def default_seed(**changes: Any) -> dict[str, Any]:
    """The default seed with top-level keys replaced (a key set to None is dropped)."""
    seed: dict[str, Any] = json.loads((ROOT / "sandbox" / "seeds" / "default.json").read_text())
    seed.update(changes)
    return {key: value for key, value in seed.items() if value is not None}


def _without_hybrid(wire: Wire) -> Answer:
    wire.reseed(default_seed(hybrid=None))
    return wire.invoke("Get-OnPremisesOrganization", {}, HYBRID_SELECT["Get-OnPremisesOrganization"])


def _remote_mailbox(wire: Wire) -> Answer:
    wire.sandbox.add_user(
        upn="remote.user@contoso.com",
        displayName="Remote User",
        mailNickname="remote.user",
        mail="remote.user@contoso.com",
        targetAddress="remote.user@contoso.mail.onmicrosoft.com",
        exchangeGuid="f20047a9-3fd1-4906-8d98-188feacdd5b7",
    )
    parameters = {"Filter": DIR_SYNCED, "ResultSize": "Unlimited"}
    return wire.invoke("Get-MailUser", parameters, READINESS_MAIL_USER_SELECT)


def _held_mailbox(wire: Wire) -> Answer:
    wire.sandbox.add_user(
        upn="legal.archive@contoso.com",
        mailboxType="Shared",
        licenses=["EXCHANGEENTERPRISE"],
        archive=True,
        litigationHold=True,
        inPlaceHolds=["UniH7d895d48-7e23-4a8d-8346-533c3beac15d", "mbx5f4e3d2c1b0a49f8e7d6c5b4a3928170:2"],
    )
    return wire.invoke("Get-Mailbox", {"ResultSize": "Unlimited"}, READINESS_MAILBOX_SELECT)


def _statistics(wire: Wire) -> Answer:
    mailbox = wire.sandbox.add_user(
        upn="reception@contoso.com", mailboxType="Shared", mailboxSizeGB=1.66, itemCount=12043
    )
    return wire.invoke("Get-MailboxStatistics", {"Identity": mailbox}, STATISTICS_SELECT)


def _statistics_batch(wire: Wire) -> Answer:
    ids = [wire.user_id(upn) for upn in ("SharedSynced@contoso.com", "RoomSynced@contoso.com")]
    return wire.batch([("Get-MailboxStatistics", {"Identity": i}, STATISTICS_SELECT) for i in ids])


def _hybrid(cmdlet: str) -> Callable[[Wire], Answer]:
    return lambda w: w.invoke(cmdlet, {}, HYBRID_SELECT[cmdlet])


# The readiness report's Graph reads, as its client sends them (docs/wire-protocols.md, same heading).
READINESS_USER_SELECT = "id,userPrincipalName,mail,assignedLicenses,onPremisesSyncEnabled"
READINESS_GROUP_SELECT = "id,displayName,mail,mailEnabled,securityEnabled,groupTypes,onPremisesSyncEnabled"
READINESS_CONTACT_SELECT = "id,displayName,mail,onPremisesSyncEnabled"
SYNCED_FILTER = "$filter=onPremisesSyncEnabled%20eq%20true"
EVENTUAL = {"ConsistencyLevel": "eventual"}


def directory_id(wire: Wire, collection: str, name: str) -> str:
    """The id of the group or contact with this display name, as a listing shows it."""
    answer = wire.send("GET", f"/v1.0/{collection}?$select=id,displayName&$top=999")
    return next(str(found["id"]) for found in answer.body()["value"] if found["displayName"] == name)


def authority_item(wire: Wire, item_id: str, group: str) -> dict[str, Any]:
    """A $batch item reading a group's source of authority, with its URL relative to the version, as Graph wants."""
    url = f"/groups/{directory_id(wire, 'groups', group)}/onPremisesSyncBehavior?$select=isCloudManaged"
    return {"id": item_id, "method": "GET", "url": url}


def graph_batch(wire: Wire, requests: list[dict[str, Any]]) -> Answer:
    return wire.send("POST", "/v1.0/$batch", {"requests": requests})


def _throttled_batch_item(wire: Wire) -> Answer:
    item = authority_item(wire, "1", "GroupGSWithMail")
    wire.sandbox.knobs(graph_batch_item_429_rate=1.0, retry_after=3)
    return graph_batch(wire, [item])


def _oversized_batch(wire: Wire) -> Answer:
    item = authority_item(wire, "0", "GroupGSWithMail")
    return graph_batch(wire, [{**item, "id": str(index)} for index in range(21)])


def _beta_item(wire: Wire) -> Answer:
    url = f"/beta/groups/{directory_id(wire, 'groups', 'GroupUSNoMail')}/onPremisesSyncBehavior"
    return graph_batch(wire, [{"id": "1", "method": "GET", "url": url}])


def _authority(collection: str, name: str) -> Callable[[Wire], Answer]:
    return lambda w: w.send(
        "GET", f"/v1.0/{collection}/{directory_id(w, collection, name)}/onPremisesSyncBehavior?$select=isCloudManaged"
    )


GRAPH_DIRECTORY_CALLS: dict[str, Callable[[Wire], Answer]] = {
    "graph.users.list_page": lambda w: w.send("GET", f"/v1.0/users?$select={READINESS_USER_SELECT}&$top=2"),
    "graph.error.page_size": lambda w: w.send("GET", "/v1.0/users?$top=1000"),
    "graph.groups.synced": lambda w: w.send(
        "GET", f"/v1.0/groups?{SYNCED_FILTER}&$select={READINESS_GROUP_SELECT}&$count=true&$top=999", headers=EVENTUAL
    ),
    "graph.error.unsupported_query": lambda w: w.send("GET", "/v1.0/groups?$filter=onPremisesSyncEnabled%20eq%20null"),
    "graph.contacts.synced": lambda w: w.send(
        "GET",
        f"/v1.0/contacts?{SYNCED_FILTER}&$select={READINESS_CONTACT_SELECT}&$count=true&$top=999",
        headers=EVENTUAL,
    ),
    "graph.groups.sync_behavior": _authority("groups", "GroupUSNoMail"),
    "graph.contacts.sync_behavior": _authority("contacts", "ContactWithMail"),
    "graph.groups.member_groups": lambda w: w.send(
        "GET",
        f"/v1.0/groups/{directory_id(w, 'groups', 'GroupGDWithMail')}/members/microsoft.graph.group"
        "?$select=id,displayName,onPremisesSyncEnabled&$count=true",
        headers=EVENTUAL,
    ),
    "graph.batch.sync_behavior": lambda w: graph_batch(
        w, [authority_item(w, "1", "GroupGSWithMail"), authority_item(w, "2", "GroupUSNoMail")]
    ),
    "graph.batch.item_throttled": _throttled_batch_item,
    "graph.error.batch_too_large": _oversized_batch,
    "graph.batch.version_in_url": _beta_item,
}


# Moving a source of authority (docs/wire-protocols.md, "Moving the source of authority"), on the default seed with
# its source-of-authority objects switched on.
AUTHORITY_SEED = {"withSourceOfAuthority": True}
MEMBER_SELECT = "id,displayName,onPremisesSyncEnabled,onPremisesSecurityIdentifier,mail,userPrincipalName"


def _authority_wire(wire: Wire) -> Wire:
    wire.reseed(default_seed(**AUTHORITY_SEED))
    return wire


def _patch_authority(wire: Wire, name: str, managed: bool, collection: str = "groups") -> Answer:
    path = f"/v1.0/{collection}/{directory_id(wire, collection, name)}/onPremisesSyncBehavior"
    return wire.send("PATCH", path, {"isCloudManaged": managed})


def _authority_patch_200(wire: Wire) -> Answer:
    _authority_wire(wire).sandbox.knobs(graph_sync_behavior_patch_200=True)
    return _patch_authority(wire, "SoaChild", True)


def _authority_forbidden(wire: Wire) -> Answer:
    path = f"/v1.0/groups/{directory_id(_authority_wire(wire), 'groups', 'SoaChild')}/onPremisesSyncBehavior"
    wire.sandbox.knobs(roles={GRAPH: ["GroupMember.Read.All", "Directory.ReadWrite.All", "Group.ReadWrite.All"]})
    wire.clients.tokens.get(GRAPH, refresh=True, claims=FRESH_TOKEN_CLAIMS)
    return wire.send("PATCH", path, {"isCloudManaged": True})


def _authority_batch(wire: Wire) -> Answer:
    _authority_wire(wire)
    requests = [
        {
            "id": item_id,
            "method": "PATCH",
            "url": f"/{collection}/{directory_id(wire, collection, name)}/onPremisesSyncBehavior",
            "headers": {"Content-Type": "application/json"},
            "body": {"isCloudManaged": True},
        }
        for item_id, collection, name in (("1", "groups", "SoaChild"), ("2", "contacts", "SoaContact"))
    ]
    return graph_batch(wire, requests)


def _rolled_back(wire: Wire) -> Answer:
    _authority_wire(wire)
    _patch_authority(wire, "SoaChild", True)
    _patch_authority(wire, "SoaChild", False)
    select = "id,displayName,onPremisesSyncEnabled,onPremisesSecurityIdentifier"
    query = f"$filter=onPremisesSyncEnabled%20eq%20null&$select={select}&$count=true"
    return wire.send("GET", f"/v1.0/groups?{query}", headers=EVENTUAL)


GRAPH_AUTHORITY_CALLS: dict[str, Callable[[Wire], Answer]] = {
    "graph.groups.sync_behavior_patch": lambda w: _patch_authority(_authority_wire(w), "SoaChild", True),
    "graph.groups.sync_behavior_patch_200": _authority_patch_200,
    "graph.error.sync_behavior_forbidden": _authority_forbidden,
    "graph.batch.sync_behavior_patch": _authority_batch,
    "graph.groups.members": lambda w: w.send(
        "GET",
        f"/v1.0/groups/{directory_id(_authority_wire(w), 'groups', 'SoaDistributionList')}/members"
        f"?$select={MEMBER_SELECT}",
    ),
    "graph.groups.rolled_back": _rolled_back,
    "graph.groups.get_select": lambda w: w.send(
        "GET",
        f"/v1.0/groups/{directory_id(_authority_wire(w), 'groups', 'SoaDistributionList')}"
        "?$select=id,displayName,mail,mailEnabled,securityEnabled,groupTypes,proxyAddresses,onPremisesSyncEnabled",
    ),
}


# How to make the sandbox give each contract's answer: the same call a client makes.
SANDBOX_CALLS: dict[str, Callable[[Wire], Answer]] = {
    "exchange.invoke.page": lambda w: w.invoke(
        "Get-Mailbox", {"ResultSize": "Unlimited"}, SELECT, Prefer="odata.maxpagesize=2"
    ),
    "exchange.invoke.set_noop": lambda w: w.invoke(
        "Set-Mailbox", {"Identity": "UserCloudManaged@contoso.com", "IsExchangeCloudManaged": True}
    ),
    "exchange.batch": _batch,
    "exchange.error.not_found": lambda w: w.invoke("Get-Mailbox", {"Identity": "ghost.user@contoso.com"}),
    "exchange.error.innererror_only": lambda w: w.invoke(
        "Set-Mailbox", {"Identity": SYNCED_WITH_MAILBOX, "Type": "Bogus"}
    ),
    "exchange.error.unknown_cmdlet": lambda w: w.invoke("Get-NoSuchCmdlet", {}),
    "exchange.error.concurrency": _concurrency_refusal,
    "exchange.error.rbac_denied": lambda w: (
        w.sandbox.knobs(denied_cmdlets=["Set-Mailbox"]),
        w.invoke("Set-Mailbox", {"Identity": SYNCED_WITH_MAILBOX, "Type": "Shared"}),
    )[1],
    "exchange.error.write_scope": lambda w: w.invoke(
        "Set-Mailbox", {"Identity": SYNCED_WITH_MAILBOX, "EmailAddresses": ["SMTP:new@contoso.com"]}
    ),
    "exchange.mailbox.archive": _archived_mailbox,
    "graph.user.get_select": lambda w: w.send("GET", f"/v1.0/users/{SYNCED_WITH_MAILBOX}?$select={USER_SELECT}"),
    "graph.user.patch": lambda w: w.send(
        "PATCH", f"/v1.0/users/{w.user_id('UserWithMailNoEXO@contoso.com')}", {"usageLocation": "DE"}
    ),
    "graph.assignLicense": lambda w: _assign(w, "UserNoMailNoEXO@contoso.com", [{"skuId": STANDARD}], []),
    "graph.subscribedSkus": lambda w: w.send("GET", "/v1.0/subscribedSkus"),
    "graph.error.not_found": lambda w: w.send("GET", "/v1.0/users/f1271fbf-6c00-4846-875d-48316c77b652"),
    "graph.error.invalid_usage_location": lambda w: _assign(
        w, "UserWithMailNoEXO@contoso.com", [{"skuId": STANDARD}], []
    ),
    "graph.error.no_available_licenses": lambda w: _assign(
        w, "UserNoMailNoEXO@contoso.com", [{"skuId": ENTERPRISE}], []
    ),
    "graph.error.missing_parameters": lambda w: _assign(w, "UserNoMailNoEXO@contoso.com", [{"skuId": STANDARD}]),
    "graph.error.license_inherited": _inherited,
    "graph.error.forbidden": lambda w: (
        w.sandbox.knobs(roles={"https://graph.microsoft.com": ["LicenseAssignment.Read.All"]}),
        w.clients.tokens.get(GRAPH, refresh=True),
        w.send("GET", f"/v1.0/users/{SYNCED_WITH_MAILBOX}"),
    )[2],
    "graph.error.throttled": lambda w: (
        w.sandbox.knobs(graph_fault_429_rate=1.0, retry_after=3),
        w.send("GET", f"/v1.0/users/{SYNCED_WITH_MAILBOX}"),
    )[1],
    **GRAPH_DIRECTORY_CALLS,
    **GRAPH_AUTHORITY_CALLS,
    "identity.token.app_service": _token,
    "identity.token.app_service_error": lambda w: _token(w, "7c0f3a9e-0000-4000-8000-00000000dead"),
    "exchange.orgconfig.tenant_default": lambda w: w.invoke(
        "Get-OrganizationConfig", {}, "BlockExchangeProvisioningFromOnPremEnabled"
    ),
    "exchange.hybrid.onpremises_organization": _hybrid("Get-OnPremisesOrganization"),
    "exchange.hybrid.organization_relationship": _hybrid("Get-OrganizationRelationship"),
    "exchange.hybrid.inbound_connector": _hybrid("Get-InboundConnector"),
    "exchange.hybrid.outbound_connector": _hybrid("Get-OutboundConnector"),
    "exchange.hybrid.migration_endpoint": _hybrid("Get-MigrationEndpoint"),
    "exchange.hybrid.intraorganization_connector": _hybrid("Get-IntraOrganizationConnector"),
    "exchange.hybrid.none": _without_hybrid,
    "exchange.mailuser.remote_mailbox": _remote_mailbox,
    "exchange.mailbox.holds": _held_mailbox,
    "exchange.mailboxstatistics.total_item_size": _statistics,
    "exchange.mailboxstatistics.batch": _statistics_batch,
}


# -- the evidence itself -----------------------------------------------------------------------------


def test_every_contract_names_its_public_evidence() -> None:
    """Each document names its evidence, states its facts, and has an answer the sandbox is checked against."""
    assert len(DOCUMENTS) >= 20
    for name, document in DOCUMENTS.items():
        assert document["id"] == name
        assert document["source"] and all(isinstance(s, str) and len(s) > 20 for s in document["source"]), name
        assert document["facts"], name
        assert isinstance(document["status"], int), name
    assert set(SANDBOX_CALLS) == set(DOCUMENTS), "every contract needs a sandbox call, and every call a contract"


@pytest.mark.parametrize("document_id", sorted(DOCUMENTS))
def test_the_sandbox_answers_with_the_services_shape(document_id: str, wire: Wire) -> None:
    """The sandbox's answer to the same call has the keys, types, status and headers of the real one."""
    assert_sandbox_matches(document_id, SANDBOX_CALLS[document_id](wire))


def test_a_convenient_answer_is_caught_by_the_shape_check() -> None:
    """The check is not vacuous: the old convenient assignLicense answer (the user with its licenses) fails it."""
    document = DOCUMENTS["graph.assignLicense"]["body"]
    convenient = {**document, "assignedLicenses": [{"skuId": STANDARD, "disabledPlans": []}]}
    assert shape_differences(convenient, document) == ["body: extra key 'assignedLicenses'"]
    assert shape_differences({k: v for k, v in document.items() if k != "id"}, document) == ["body: missing key 'id'"]
    assert shape_differences({**document, "businessPhones": "none"}, document) != []


# -- the clients on the real shapes ------------------------------------------------------------------


def _response(document_id: str) -> Response:
    document = DOCUMENTS[document_id]
    body = document["body"]
    raw = b"\x00" * 32 if document.get("bodyBytes") else (body.encode() if isinstance(body, str) else b"")
    if isinstance(body, dict):
        raw = json.dumps(body).encode()
    context = CallContext("contract", document_id)
    return Response(document["status"], document.get("headers") or {}, raw, context)


@pytest.mark.parametrize(
    ("document_id", "error", "text"),
    [
        ("exchange.error.not_found", NotFoundError, "couldn't be found"),
        ("exchange.error.innererror_only", BadRequestError, "Cannot process argument transformation"),
        ("exchange.error.unknown_cmdlet", UnknownCmdletError, "no Exchange directory role"),
        ("exchange.error.rbac_denied", PermissionDeniedError, "does not have a role that allows"),
        ("exchange.error.write_scope", WriteScopeError, "being synchronized from your on-premises organization"),
    ],
)
def test_exchange_errors_map_to_what_a_caller_acts_on(document_id: str, error: type, text: str) -> None:
    """Each real Exchange error shape becomes the exception class its caller acts on, with the service's reason."""
    mapped = map_error(_response(document_id), write=True)
    assert isinstance(mapped, error)
    assert text in str(mapped)


def test_the_concurrency_refusal_is_throttling_whatever_its_status() -> None:
    """The plain-text per-tenant refusal (status unknown) is recognised by its text as throttling."""
    response = _response("exchange.error.concurrency")
    assert _is_throttle(response, None)
    assert isinstance(map_error(response, write=True), ThrottledError)


def test_exchange_pages_batches_and_warnings_parse() -> None:
    """A page loses its annotations, a no-op Set keeps its warning, and batch items are matched by id."""
    page = _result(DOCUMENTS["exchange.invoke.page"]["body"])
    assert [sorted(item) for item in page.value] == [sorted(SELECT.split(","))] * 2
    noop = _result(DOCUMENTS["exchange.invoke.set_noop"]["body"])
    assert noop.value == [] and "no settings of" in noop.warnings[0]
    commands = [Command("Get-Mailbox", {"Identity": "a"}), Command("Get-Mailbox", {"Identity": "b"})]
    body = json.loads(json.dumps(DOCUMENTS["exchange.batch"]["body"]))
    for index, item in enumerate(body["responses"]):
        item["id"] = str(index)  # our client numbers its items 0, 1, ...
    found, missing = batch_items(body, commands, "cid")
    assert found.result is not None and found.result.value[0]["UserPrincipalName"]
    assert isinstance(missing.error, NotFoundError)


def test_an_archive_is_seen_by_its_guid_even_when_archive_status_reads_none() -> None:
    """The contract's mailbox has an archive by ArchiveGuid; has_archive sees it whatever ArchiveStatus says."""
    with_archive, without = _result(DOCUMENTS["exchange.mailbox.archive"]["body"]).value
    assert with_archive["ArchiveStatus"] == "None" and has_archive(with_archive)
    assert not has_archive(without)


@pytest.mark.parametrize(
    ("document_id", "error"),
    [
        ("graph.error.not_found", NotFoundError),
        ("graph.error.invalid_usage_location", UsageLocationError),
        ("graph.error.no_available_licenses", NoLicensesError),
        ("graph.error.license_inherited", LicenseInheritedError),
        ("graph.error.forbidden", PermissionDeniedError),
        ("graph.error.missing_parameters", BadRequestError),
        ("graph.error.throttled", ThrottledError),
    ],
)
def test_graph_errors_map_to_what_the_chain_acts_on(document_id: str, error: type) -> None:
    """Each real Graph error becomes the exception (and so the result code) the chain acts on."""
    response = _response(document_id)
    assert isinstance(map_graph_error(response, response.json(), write=True), error)


def test_graph_throttling_carries_a_retry_after_in_seconds() -> None:
    """Graph's 429 is throttling, and its Retry-After (seconds, maybe fractional) is read."""
    response = _response("graph.error.throttled")
    assert _is_throttle(response, None)
    assert parse_retry_after(response.headers["Retry-After"], cap=300) == 3


def test_graph_user_and_sku_answers_parse() -> None:
    """A $select user yields its direct and inherited licenses; every subscribed SKU yields its free units."""
    user = GraphUser.from_json(DOCUMENTS["graph.user.get_select"]["body"])
    assert user.licenses == {
        "21f11095-e1c6-472f-871f-cb6e4325e8cd": None,
        "ba96ade9-b3db-47b1-8b87-0e0867918fd9": "818ce966-f145-4708-98dc-538bfc8d9f5f",
    }
    (sku,) = [Sku.from_json(item) for item in DOCUMENTS["graph.subscribedSkus"]["body"]["value"]]
    assert sku.free_units == 3 and sku.exchange_plans == ("11cb6d2c-e6f9-4bf2-a06b-064aa81cd83b",)


def test_the_assign_license_answer_carries_no_licenses() -> None:
    """A 200 from assignLicense is the user's default properties: nothing in it says which licenses it has."""
    assert GraphUser.from_json(DOCUMENTS["graph.assignLicense"]["body"]).licenses == {}


def test_an_unknown_managed_identity_is_a_configuration_error_not_an_outage() -> None:
    """App Service's 400 for an unknown client id, as azure-identity reports it, is an AuthenticationError."""
    message = DOCUMENTS["identity.token.app_service_error"]["body"]["message"]
    text = (
        "App Service managed identity configuration not found in environment. "
        f"Token request error: (invalid_scope) 400, {message}"
    )
    failure: ExoprovError = token_failure(GRAPH, Exception(text))
    assert isinstance(failure, AuthenticationError) and failure.code == "permission_denied"


# -- the result contract's codes ---------------------------------------------------------------------


def test_the_result_codes_are_the_table_in_contracts_md() -> None:
    """CONTRACT_CODES is exactly the code column of docs/contracts.md's "Result message" table."""
    text = (ROOT / "docs" / "contracts.md").read_text()
    table = text.split("`error.code` is always one of", 1)[1].split("\n\n", 2)[1]
    codes = {line.split("`")[1] for line in table.splitlines()[2:]}
    assert codes == CONTRACT_CODES


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PermissionDeniedError("refused"), "permission_denied"),
        (AuthenticationError("no credential"), "permission_denied"),
        (UsageLocationError("no usage location"), "usage_location_missing"),
        (InvalidRequestError("license", "not allowed", "r-1", code="license_not_allowed"), "license_not_allowed"),
        (WriteScopeError("mastered on-premises"), "internal_error"),
        (NotFoundError("gone"), "internal_error"),
        (BadRequestError("refused a parameter"), "internal_error"),
        (UnexpectedAnswerError("a link elsewhere"), "internal_error"),
        (LicenseError("refused"), "internal_error"),
        (ConfigurationError("GRAPH_ENDPOINT", "not a URL"), "internal_error"),
        (PermanentError("no"), "internal_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value,
)
def test_an_error_ends_a_request_with_its_own_code_only_when_the_contract_has_it(
    error: ExoprovError, code: str
) -> None:
    """result_code keeps a contract code and reports any other as internal_error, for every class of the tree."""
    assert result_code(error) == code
    tree = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, ExoprovError)]
    assert all(result_code(cls.__new__(cls)) in CONTRACT_CODES for cls in tree)
