"""The sandbox reproduces docs/exchange-behaviour.md; each test pins one rule, through the real client."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.enforcement import read_tenant_default
from shared.errors import BadRequestError, NotFoundError, WriteScopeError
from shared.exchange import Command, ExchangeClient
from shared.wiring import Clients


@pytest.fixture
def exo(clients: Clients) -> ExchangeClient:
    return clients.exchange()


def run(exo: ExchangeClient, cmdlet: str, **params: Any) -> list[dict[str, Any]]:
    return exo.invoke(Command(cmdlet, params)).value


def one(exo: ExchangeClient, cmdlet: str, identity: str) -> dict[str, Any]:
    (record,) = run(exo, cmdlet, Identity=identity)
    return record


def test_b1_every_synced_user_is_a_user_with_its_upn(exo: ExchangeClient) -> None:
    """Get-User finds every synced user, with the UPN from AD, whether or not it has mail or a license."""
    users = {u["UserPrincipalName"]: u for u in run(exo, "Get-User")}
    assert users["UserNoMailNoEXO@contoso.com"]["RecipientTypeDetails"] == "User"
    assert users["UserWithMailNoEXO@contoso.com"]["RecipientTypeDetails"] == "User"
    assert users["UserWithMailWithEXO@contoso.com"]["RecipientTypeDetails"] == "UserMailbox"


def test_b2_mail_alone_creates_no_mailbox(exo: ExchangeClient) -> None:
    """A user with `mail` but no Exchange license has no mailbox."""
    with pytest.raises(NotFoundError, match="couldn't be found"):
        run(exo, "Get-Mailbox", Identity="UserWithMailNoEXO@contoso.com")


def test_b6_without_hybrid_no_license_means_no_mailbox_at_all(exo: ExchangeClient) -> None:
    """Unlike Enable-RemoteMailbox in classic hybrid, an unlicensed synced user has no (unlicensed) mailbox."""
    mailboxes = {m["UserPrincipalName"] for m in run(exo, "Get-Mailbox")}
    assert not mailboxes & {"UserNoMailNoEXO@contoso.com", "UserWithMailNoEXO@contoso.com"}


def test_b3_mailbox_without_mail_gets_upn_as_primary(exo: ExchangeClient) -> None:
    """A licensed user with empty `mail` gets its UPN as primary SMTP address."""
    assert (
        one(exo, "Get-Mailbox", "UserNoMailWithEXO@contoso.com")["PrimarySmtpAddress"]
        == "UserNoMailWithEXO@contoso.com"
    )


def test_b4_mailbox_with_mail_gets_mail_as_primary_plus_sip_and_onmicrosoft(exo: ExchangeClient) -> None:
    """With `mail` set, the primary is `mail`; SIP:<upn> and alias@tenant.onmicrosoft.com are present too."""
    box = one(exo, "Get-Mailbox", "UserWithMailWithEXO@contoso.com")
    assert box["PrimarySmtpAddress"] == "john.doe@contoso.com"
    assert "SIP:userwithmailwithexo@contoso.com" in box["EmailAddresses"]
    assert "smtp:UserWithMailWithEXO@contoso.onmicrosoft.com" in box["EmailAddresses"]


@pytest.mark.parametrize("cloud_managed", [False, True])
def test_b5_mail_change_moves_primary_and_keeps_the_old_one(exo: ExchangeClient, sandbox, cloud_managed: bool) -> None:
    """A new `mail` from AD becomes primary, the old primary stays as smtp:, with or without cloud management."""
    if cloud_managed:
        run(exo, "Set-Mailbox", Identity="UserWithMailWithEXO@contoso.com", IsExchangeCloudManaged=True)
    sandbox.sync_mail("UserWithMailWithEXO@contoso.com", "j.doe@contoso.com")
    box = one(exo, "Get-Mailbox", "UserWithMailWithEXO@contoso.com")
    assert box["PrimarySmtpAddress"] == box["WindowsEmailAddress"] == "j.doe@contoso.com"
    assert "smtp:john.doe@contoso.com" in box["EmailAddresses"]


def test_b7_synced_exchange_attributes_are_refused_but_quotas_and_protocols_are_writable(exo: ExchangeClient) -> None:
    """Without cloud management, address and custom-attribute writes fail; quotas and IMAP/POP do not."""
    with pytest.raises(WriteScopeError, match="synchronized from your on-premises organization"):
        run(exo, "Set-Mailbox", Identity="UserWithMailWithEXO@contoso.com", CustomAttribute1="x")
    run(exo, "Set-Mailbox", Identity="UserWithMailWithEXO@contoso.com", ProhibitSendQuota="49GB")
    run(exo, "Set-CASMailbox", Identity="UserWithMailWithEXO@contoso.com", ImapEnabled=False)


def test_b8_cloud_management_makes_exchange_attributes_writable(exo: ExchangeClient) -> None:
    """After Set-Mailbox -IsExchangeCloudManaged $true, the same attribute write succeeds."""
    run(exo, "Set-Mailbox", Identity="UserWithMailWithEXO@contoso.com", IsExchangeCloudManaged=True)
    run(exo, "Set-Mailbox", Identity="UserWithMailWithEXO@contoso.com", CustomAttribute1="x")
    box = one(exo, "Get-Mailbox", "UserWithMailWithEXO@contoso.com")
    assert box["IsExchangeCloudManaged"] is True and box["CustomAttribute1"] == "x"


def test_b8_the_flag_has_its_own_parameter_set(exo: ExchangeClient) -> None:
    """IsExchangeCloudManaged cannot be combined with other parameters in one call."""
    with pytest.raises(BadRequestError, match="Parameter set cannot be resolved"):
        run(exo, "Set-Mailbox", Identity="UserWithMailWithEXO@contoso.com", IsExchangeCloudManaged=True, Type="Shared")


def test_b8_the_flag_exists_for_mailboxes_only(exo: ExchangeClient) -> None:
    """Mail users and groups have no IsExchangeCloudManaged parameter (B8, B18, B23)."""
    with pytest.raises(BadRequestError, match="parameter name 'IsExchangeCloudManaged'"):
        run(exo, "Set-MailUser", Identity="MailUser1@contoso.com", IsExchangeCloudManaged=True)
    with pytest.raises(BadRequestError, match="parameter name 'IsExchangeCloudManaged'"):
        run(exo, "Set-DistributionGroup", Identity="GroupGSWithMail", IsExchangeCloudManaged=True)


def test_b8_setting_the_flag_twice_warns_and_changes_nothing(exo: ExchangeClient) -> None:
    """A no-op Set-Mailbox succeeds with the "no settings ... have been modified" warning."""
    run(exo, "Set-Mailbox", Identity="UserWithMailWithEXO@contoso.com", IsExchangeCloudManaged=True)
    result = exo.invoke(
        Command("Set-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com", "IsExchangeCloudManaged": True})
    )
    assert any("have been modified" in w for w in result.warnings)


def test_b9_cloud_only_mailboxes_are_not_dir_synced(exo: ExchangeClient) -> None:
    """A cloud-only shared mailbox reads IsDirSynced false, so no sweep ever touches it."""
    box = one(exo, "Get-Mailbox", "SharedCloudOnly@contoso.onmicrosoft.com")
    assert box["IsDirSynced"] is False and box["RecipientTypeDetails"] == "SharedMailbox"
    synced = run(exo, "Get-Mailbox", Filter="IsDirSynced -eq 'True'")
    assert "SharedCloudOnly@contoso.onmicrosoft.com" not in {b["UserPrincipalName"] for b in synced}


def test_b10_filter_on_is_exchange_cloud_managed_is_refused(exo: ExchangeClient) -> None:
    """Get-Mailbox -Filter on IsExchangeCloudManaged does not work, so the sweep filters client-side."""
    with pytest.raises(BadRequestError, match="IsExchangeCloudManaged"):
        run(exo, "Get-Mailbox", Filter="IsExchangeCloudManaged -eq 'False'")


def test_b12_tenant_default_is_read_from_organization_config(exo: ExchangeClient, sandbox) -> None:
    """BlockExchangeProvisioningFromOnPremEnabled tells whether the tenant-wide default is on."""
    assert read_tenant_default(exo) is False
    sandbox.reset({"tenant": {"tenantDefaultCloudManaged": True}})
    assert read_tenant_default(exo) is True


def test_b13_set_mailbox_type_converts_after_the_lag(exo: ExchangeClient, sandbox) -> None:
    """Set-Mailbox -Type Shared converts an existing mailbox; the new type shows once the lag passes."""
    sandbox.knobs(conversion_lag=0.3)
    run(exo, "Set-Mailbox", Identity="UserNoMailWithEXO@contoso.com", Type="Shared")
    assert one(exo, "Get-Mailbox", "UserNoMailWithEXO@contoso.com")["RecipientTypeDetails"] == "UserMailbox"
    time.sleep(0.4)
    assert one(exo, "Get-Mailbox", "UserNoMailWithEXO@contoso.com")["RecipientTypeDetails"] == "SharedMailbox"


def test_b17_a_mail_user_needs_alias_mail_and_target_address(exo: ExchangeClient) -> None:
    """Only alias + mail + targetAddress makes a MailUser; any one missing makes no recipient."""
    mail_users = {u["UserPrincipalName"] for u in run(exo, "Get-MailUser")}
    assert "MailUser1@contoso.com" in mail_users
    assert not mail_users & {"MailUser2@contoso.com", "MailUser3@contoso.com", "MailUser4@contoso.com"}
    recipients = {r.get("UserPrincipalName") for r in run(exo, "Get-Recipient")}
    assert "MailUser2@contoso.com" not in recipients


def test_b18_mail_user_alias_is_writable_but_custom_attributes_hit_dual_write(exo: ExchangeClient) -> None:
    """Set-MailUser can change the alias of a synced mail user; custom attributes fail as on-prem mastered."""
    run(exo, "Set-MailUser", Identity="MailUser1@contoso.com", Alias="mu1")
    assert one(exo, "Get-MailUser", "MailUser1@contoso.com")["Alias"] == "mu1"
    with pytest.raises(WriteScopeError, match="DualWrite"):
        run(exo, "Set-MailUser", Identity="MailUser1@contoso.com", CustomAttribute1="x")


def test_b19_guests_are_hidden_guest_mail_users(exo: ExchangeClient) -> None:
    """A guest appears as GuestMailUser, hidden from address lists."""
    (guest,) = [u for u in run(exo, "Get-MailUser") if u["RecipientTypeDetails"] == "GuestMailUser"]
    assert guest["HiddenFromAddressListsEnabled"] is True


def test_b20_a_contact_needs_mail_to_be_a_recipient(exo: ExchangeClient) -> None:
    """ContactWithMail is a MailContact; ContactNoMail does not exist in Exchange."""
    assert one(exo, "Get-MailContact", "ContactWithMail")["RecipientTypeDetails"] == "MailContact"
    with pytest.raises(NotFoundError):
        run(exo, "Get-MailContact", Identity="ContactNoMail")


def test_b21_synced_contact_edits_fail_or_silently_do_nothing(exo: ExchangeClient) -> None:
    """Some cloud edits of a synced contact are refused; others "succeed" and are not written."""
    with pytest.raises(WriteScopeError):
        run(exo, "Set-MailContact", Identity="ContactWithMail", CustomAttribute1="x")
    run(exo, "Set-MailContact", Identity="ContactWithMail", HiddenFromAddressListsEnabled=True)
    assert "HiddenFromAddressListsEnabled" not in one(exo, "Get-MailContact", "ContactWithMail")


def test_b22_a_group_with_mail_becomes_a_universal_distribution_group(exo: ExchangeClient) -> None:
    """Any group with mail is a universal distribution group, security-enabled for security groups."""
    groups = {g["Name"]: g for g in run(exo, "Get-DistributionGroup")}
    assert groups["GroupGSWithMail"]["RecipientTypeDetails"] == "MailUniversalSecurityGroup"
    assert groups["GroupGDWithMail"]["RecipientTypeDetails"] == "MailUniversalDistributionGroup"
    assert "GroupUSNoMail" not in groups


def test_b23_synced_groups_cannot_be_changed_in_the_cloud(exo: ExchangeClient) -> None:
    """Set-DistributionGroup on a synced group is refused as out of write scope."""
    with pytest.raises(WriteScopeError):
        run(exo, "Set-DistributionGroup", Identity="GroupGSWithMail", DisplayName="New name")
