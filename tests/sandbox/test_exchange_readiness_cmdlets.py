"""The sandbox's answers to the readiness report's Exchange reads, as tests/contracts/exchange/ describes them.

The tenant-wide default, the hybrid leftovers of the Hybrid Configuration Wizard, synced mail users with an
ExchangeGuid, mailbox holds, and mailbox sizes one by one and in $batches; all of it read-only.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sandbox.tenant import ZERO_GUID, byte_quantity
from shared.wiring import Clients
from tests.conftest import SandboxHandle
from tests.test_contracts import (
    DIR_SYNCED,
    HYBRID_SELECT,
    READINESS_MAIL_USER_SELECT,
    READINESS_MAILBOX_SELECT,
    STATISTICS_SELECT,
    Answer,
    Wire,
    default_seed,
)

ORG = "5c1e9f0a-3b7d-4e2a-9c48-0d6f2b8a71e3"  # the on-premises organization of the default seed's hybrid
REMOTE_GUID = "f20047a9-3fd1-4906-8d98-188feacdd5b7"


@pytest.fixture
def wire(sandbox: SandboxHandle, clients: Clients) -> Wire:
    return Wire(sandbox, clients)


def rows(answer: Answer) -> list[dict[str, Any]]:
    """The value of a successful InvokeCommand answer."""
    assert answer.status == 200, answer.raw[:300]
    value: list[dict[str, Any]] = answer.body()["value"]
    return value


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its annotation siblings, as a client reads it."""
    return {key: value for key, value in record.items() if "@" not in key}


def error_text(answer: Answer) -> str:
    error = answer.body()["error"]
    details = error.get("details") or [{}]
    return str(details[0].get("message") or error["innererror"]["internalexception"]["message"])


def hybrid_seed(**kinds: list[dict[str, Any]]) -> dict[str, Any]:
    """The default seed with the hybrid objects of the given kinds added to its own."""
    seed = default_seed()
    hybrid = copy.deepcopy(seed["hybrid"])
    for kind, entries in kinds.items():
        hybrid[kind] = [*hybrid.get(kind, []), *entries]
    return {**seed, "hybrid": hybrid}


def test_the_tenant_default_reads_back_as_block_exchange_provisioning_from_on_prem_enabled(wire: Wire) -> None:
    """Get-OrganizationConfig answers the tenant-wide default as a boolean under its real name, off unless seeded on."""
    select = "BlockExchangeProvisioningFromOnPremEnabled"
    assert rows(wire.invoke("Get-OrganizationConfig", {}, select)) == [{select: False}]
    seed = default_seed()
    wire.reseed({**seed, "tenant": {**seed["tenant"], "tenantDefaultCloudManaged": True}})
    assert rows(wire.invoke("Get-OrganizationConfig", {}, select)) == [{select: True}]


def test_the_default_tenant_has_one_leftover_of_each_kind_named_as_the_wizard_names_it(wire: Wire) -> None:
    """Each hybrid cmdlet lists one object, tied to the on-premises organization's GUID by the wizard's names."""
    found = {
        cmdlet: [plain(r) for r in rows(wire.invoke(cmdlet, {}, select))] for cmdlet, select in HYBRID_SELECT.items()
    }
    assert all(len(records) == 1 for records in found.values()), found
    (organization,) = found["Get-OnPremisesOrganization"]
    assert organization["OrganizationGuid"] == ORG and organization["HybridDomains"] == ["contoso.com"]
    assert found["Get-InboundConnector"][0]["Name"] == organization["InboundConnector"] == f"Inbound from {ORG}"
    assert found["Get-OutboundConnector"][0]["Name"] == organization["OutboundConnector"] == f"Outbound to {ORG}"
    relationship = found["Get-OrganizationRelationship"][0]
    assert relationship["Name"] == organization["OrganizationRelationship"] == f"O365 to On-premises - {ORG}"
    for cmdlet in ("Get-InboundConnector", "Get-OutboundConnector"):
        assert (
            found[cmdlet][0]["ConnectorType"] == "OnPremises" and found[cmdlet][0]["ConnectorSource"] == "HybridWizard"
        )
    assert found["Get-MigrationEndpoint"][0]["EndpointType"] == "ExchangeRemoteMove"
    assert found["Get-IntraOrganizationConnector"][0]["Name"] == f"HybridIOC - {ORG}"


def test_a_tenant_without_hybrid_answers_every_hybrid_cmdlet_with_an_empty_value(wire: Wire) -> None:
    """Without hybrid objects each cmdlet answers 200 with an empty value and no warning, never 404."""
    wire.reseed(default_seed(hybrid=None))
    for cmdlet, select in HYBRID_SELECT.items():
        answer = wire.invoke(cmdlet, {}, select)
        assert rows(answer) == [] and answer.body()["@adminapi.warnings"] == [], cmdlet


def test_a_leftover_is_found_by_its_identity_and_an_unknown_one_is_not_found(wire: Wire) -> None:
    """-Identity finds an object by name or GUID; one that names nothing is the usual 404 not-found error."""
    (by_name,) = rows(wire.invoke("Get-InboundConnector", {"Identity": f"Inbound from {ORG}"}))
    (by_guid,) = rows(wire.invoke("Get-InboundConnector", {"Identity": by_name["Guid"]}))
    assert by_guid["Name"] == by_name["Name"]
    missing = wire.invoke("Get-OrganizationRelationship", {"Identity": "Fabrikam"})
    assert missing.status == 404 and "ManagementObjectNotFoundException" in error_text(missing)


def test_a_partner_connector_is_listed_beside_the_on_premises_one(wire: Wire) -> None:
    """Get-InboundConnector lists every connector; only ConnectorType tells an on-premises one from a partner's."""
    partner = {"name": "From Fabrikam", "connectorType": "Partner", "connectorSource": "AdminUI"}
    wire.reseed(hybrid_seed(inboundConnectors=[partner]))
    found = {r["Name"]: r for r in rows(wire.invoke("Get-InboundConnector", {}, HYBRID_SELECT["Get-InboundConnector"]))}
    assert found["From Fabrikam"]["ConnectorType"] == "Partner"
    assert found[f"Inbound from {ORG}"]["ConnectorType"] == "OnPremises"


def test_migration_endpoints_filter_by_type_and_refuse_an_unknown_type(wire: Wire) -> None:
    """-Type keeps the endpoints of one migration type; a value outside the enumeration is a conversion error."""
    imap = {"name": "IMAP from Gmail", "endpointType": "IMAP", "remoteServer": "imap.gmail.com"}
    wire.reseed(hybrid_seed(migrationEndpoints=[imap]))
    assert len(rows(wire.invoke("Get-MigrationEndpoint", {}))) == 2
    (remote,) = rows(wire.invoke("Get-MigrationEndpoint", {"Type": "ExchangeRemoteMove"}))
    assert remote["Identity"] == "Hybrid Migration Endpoint - EWS (Default Web Site)"
    refused = wire.invoke("Get-MigrationEndpoint", {"Type": "Hybrid"})
    assert refused.status == 400 and "ExchangeRemoteMove" in error_text(refused)


def test_a_parameter_the_cmdlet_does_not_have_is_refused(wire: Wire) -> None:
    """Get-OnPremisesOrganization has no ResultSize (Learn syntax), so sending one is a 400, not silently ignored."""
    refused = wire.invoke("Get-OnPremisesOrganization", {"ResultSize": "Unlimited"})
    assert refused.status == 400 and "ResultSize" in error_text(refused)


def test_synced_mail_users_carry_a_typed_exchange_guid_that_is_zero_when_they_have_none(wire: Wire) -> None:
    """The IsDirSynced filter keeps synced mail users; a remote mailbox's ExchangeGuid is a typed GUID, others zero."""
    wire.sandbox.add_user(
        upn="remote.user@contoso.com",
        mailNickname="remote.user",
        mail="remote.user@contoso.com",
        targetAddress="remote.user@contoso.mail.onmicrosoft.com",
        exchangeGuid=REMOTE_GUID,
    )
    parameters = {"Filter": DIR_SYNCED, "ResultSize": "Unlimited"}
    found = {
        r["UserPrincipalName"]: r for r in rows(wire.invoke("Get-MailUser", parameters, READINESS_MAIL_USER_SELECT))
    }
    assert set(found) == {"MailUser1@contoso.com", "remote.user@contoso.com"}  # the guest is not dir-synced
    remote = found["remote.user@contoso.com"]
    assert remote["ExchangeGuid"] == REMOTE_GUID and remote["ExchangeGuid@odata.type"] == "#Guid"
    assert found["MailUser1@contoso.com"]["ExchangeGuid"] == ZERO_GUID
    assert all(r["RecipientTypeDetails"] == "MailUser" and r["IsDirSynced"] is True for r in found.values())


def test_mail_users_are_not_filtered_on_exchange_guid(wire: Wire) -> None:
    """No source shows ExchangeGuid filterable for mail users: the sandbox refuses it, so the report tests it itself."""
    refused = wire.invoke("Get-MailUser", {"Filter": f"ExchangeGuid -ne '{ZERO_GUID}'"})
    assert refused.status == 400 and "ExchangeGuid" in error_text(refused)


def test_mailbox_holds_and_archive_are_answered_from_the_seed(wire: Wire) -> None:
    """Get-Mailbox answers litigation hold, InPlaceHolds, the label and delay holds and the archive with their types."""
    holds = ["UniH7d895d48-7e23-4a8d-8346-533c3beac15d", "mbx5f4e3d2c1b0a49f8e7d6c5b4a3928170:2"]
    wire.sandbox.add_user(
        upn="legal.archive@contoso.com",
        mailboxType="Shared",
        archive=True,
        litigationHold=True,
        inPlaceHolds=holds,
        complianceTagHold=True,
        delayHold=True,
    )
    found = {
        r["UserPrincipalName"]: r
        for r in rows(wire.invoke("Get-Mailbox", {"ResultSize": "Unlimited"}, READINESS_MAILBOX_SELECT))
    }
    held, free = found["legal.archive@contoso.com"], found["SharedSynced@contoso.com"]
    assert held["InPlaceHolds"] == holds and held["InPlaceHolds@odata.type"] == "#Collection(String)"
    assert held["LitigationHoldEnabled"] is held["ComplianceTagHoldApplied"] is held["DelayHoldApplied"] is True
    assert held["ArchiveGuid"] != ZERO_GUID and held["RecipientTypeDetails"] == "SharedMailbox"
    assert free["InPlaceHolds"] == [] and free["ArchiveGuid"] == ZERO_GUID
    assert free["LitigationHoldEnabled"] is free["ComplianceTagHoldApplied"] is free["DelayHoldApplied"] is False
    assert set(plain(held)) == set(READINESS_MAILBOX_SELECT.split(","))


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B (0 bytes)"),
        (3402, "3.322 KB (3,402 bytes)"),
        (262_144, "256 KB (262,144 bytes)"),
        (107_374_182, "102.4 MB (107,374,182 bytes)"),
        (1_782_579_200, "1.66 GB (1,782,579,200 bytes)"),
        (53_687_091_200, "50 GB (53,687,091,200 bytes)"),
    ],
)
def test_sizes_use_the_largest_unit_reached_with_up_to_three_decimals(size: int, text: str) -> None:
    """A size reads as Exchange prints it: the value in the largest unit it reaches, then the exact byte count."""
    assert byte_quantity(size) == text


def test_mailbox_statistics_answer_the_size_text_and_the_mailbox_guid(wire: Wire) -> None:
    """Get-MailboxStatistics of a mailbox: its display name, its GUID (typed), its item count and its size text."""
    user_id = wire.sandbox.add_user(upn="big.shared@contoso.com", mailboxType="Shared", mailboxSizeGB=60, itemCount=7)
    (stats,) = rows(wire.invoke("Get-MailboxStatistics", {"Identity": user_id}, STATISTICS_SELECT))
    (mailbox,) = rows(wire.invoke("Get-Mailbox", {"Identity": user_id}, "ExchangeGuid"))
    assert stats["TotalItemSize"] == "60 GB (64,424,509,440 bytes)" and stats["ItemCount"] == 7
    assert stats["DisplayName"] == "big.shared" and stats["MailboxGuid@odata.type"] == "#Guid"
    assert stats["MailboxGuid"] == mailbox["ExchangeGuid"]


def test_mailbox_statistics_come_back_item_by_item_in_a_batch_of_ten(wire: Wire) -> None:
    """Ten Get-MailboxStatistics in one $batch answer ten items, each the single-call envelope, matched by id."""
    ids = [wire.sandbox.add_user(upn=f"shared{n}@contoso.com", mailboxType="Shared") for n in range(10)]
    answer = wire.batch([("Get-MailboxStatistics", {"Identity": i}, STATISTICS_SELECT) for i in ids])
    assert answer.status == 200
    items = {item["id"]: item for item in answer.body()["responses"]}
    assert set(items) == {str(n) for n in range(10)}
    for n in range(10):
        assert items[str(n)]["status"] == 200
        (stats,) = items[str(n)]["body"]["value"]
        assert stats["DisplayName"] == f"shared{n}" and stats["TotalItemSize"].endswith("(107,374,182 bytes)")


def test_the_readiness_reads_run_no_write_cmdlet_and_each_call_is_counted(wire: Wire) -> None:
    """Every cmdlet the report sends is counted in the sandbox's stats, batch items one by one, and none is a write."""
    wire.invoke("Get-OrganizationConfig", {}, "BlockExchangeProvisioningFromOnPremEnabled")
    for cmdlet, select in HYBRID_SELECT.items():
        wire.invoke(cmdlet, {}, select)
    wire.invoke("Get-Mailbox", {"ResultSize": "Unlimited"}, READINESS_MAILBOX_SELECT)
    wire.invoke("Get-MailUser", {"Filter": DIR_SYNCED, "ResultSize": "Unlimited"}, READINESS_MAIL_USER_SELECT)
    shared = [wire.user_id(upn) for upn in ("SharedSynced@contoso.com", "RoomSynced@contoso.com")]
    wire.batch([("Get-MailboxStatistics", {"Identity": i}, STATISTICS_SELECT) for i in shared])
    commands = wire.sandbox.stats()["commands"]
    expected = {"Get-OrganizationConfig": 1, "Get-Mailbox": 1, "Get-MailUser": 1, "Get-MailboxStatistics": 2}
    assert commands == {**expected, **dict.fromkeys(HYBRID_SELECT, 1)}
    assert all(cmdlet.startswith("Get-") for cmdlet in commands)
