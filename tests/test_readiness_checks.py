"""The readiness checks as pure rules over an inventory (docs/readiness.md, "The checks")."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.graph import Sku
from shared.mailbox_rules import size_bytes
from shared.readiness.checks import SweepScope, run_checks
from shared.readiness.inventory import (
    ZERO_GUID,
    DirectoryObject,
    Inventory,
    MailboxFacts,
    MailUserFacts,
    OrgFacts,
    UserFacts,
)
from shared.readiness.model import CHECK_IDS, Check, ReadinessReport

SCOPE = SweepScope(frozenset({"UserMailbox", "SharedMailbox"}), frozenset({"vip@contoso.com"}))
EXCHANGE_PLAN = "9aaf7827-d63c-4b61-89c3-182f06f82e5c"
STANDARD = Sku("sku-std", "EXCHANGESTANDARD", 10, (EXCHANGE_PLAN,), ())


def mailbox(name: str, kind: str = "UserMailbox", **facts: object) -> MailboxFacts:
    record = {
        "ExternalDirectoryObjectId": name,
        "UserPrincipalName": f"{name}@contoso.com",
        "PrimarySmtpAddress": f"{name}@contoso.com",
        "RecipientTypeDetails": kind,
        "IsDirSynced": True,
        "IsExchangeCloudManaged": True,
        **facts,
    }
    return MailboxFacts.from_record(record)


def user(name: str, *, licensed: bool = True, mail: str | None = None, disabled: tuple[str, ...] = ()) -> UserFacts:
    licenses = [{"skuId": "sku-std", "disabledPlans": list(disabled)}] if licensed else []
    return UserFacts.from_json(
        {"id": name, "userPrincipalName": f"{name}@contoso.com", "mail": mail, "assignedLicenses": licenses}
    )


def inventory(**parts: object) -> Inventory:
    found = Inventory(org=OrgFacts(default_cloud_managed=True), skus={"sku-std": STANDARD})
    for name, value in parts.items():
        setattr(found, name, value)
    return found


def checks(found: Inventory) -> dict[str, Check]:
    return {check.id: check for check in run_checks(found, SCOPE)}


def test_an_empty_tenant_passes_every_check_but_the_manual_one() -> None:
    """Nothing left on-premises: every check passes, and the sync versions stay a thing to check by hand."""
    report = ReadinessReport(datetime.now(UTC), "t", run_checks(inventory(), SCOPE))
    assert [c.id for c in report.checks] == list(CHECK_IDS)
    assert {c.id: c.status for c in report.checks if c.status != "pass"} == {"sync-client-version": "manual"}
    assert report.ready


def test_a_part_that_could_not_be_read_makes_its_checks_manual_never_pass() -> None:
    """Missing data is never a pass: the checks that need it say what failed, and the report is not ready."""
    found = inventory(errors={"groups": "Graph denied GET /groups: Group.Read.All"})
    result = checks(found)
    groups = result["synced-groups"]
    assert groups.status == "manual" and "Group.Read.All" in (groups.error or "")
    report = ReadinessReport(datetime.now(UTC), "t", tuple(result.values()))
    assert not report.ready and report.summary["fail"] == 0


def test_mailboxes_not_cloud_managed_say_whether_the_sweep_will_take_them() -> None:
    """Each synced mailbox still managed on-premises is listed, with the sweep's view of it."""
    found = inventory(
        mailboxes=[
            mailbox("a", IsExchangeCloudManaged=False),
            mailbox("vip", IsExchangeCloudManaged=False, PrimarySmtpAddress="vip@contoso.com"),
            mailbox("room", "RoomMailbox", IsExchangeCloudManaged=False),
            mailbox("cloud", IsDirSynced=False, IsExchangeCloudManaged=False),
            mailbox("done"),
        ],
        users={n: user(n) for n in ("a", "vip", "room", "cloud", "done")},
    )
    check = checks(found)["mailboxes-not-cloud-managed"]
    assert check.status == "fail"
    assert {f.id: f.detail for f in check.objects} == {
        "a": "the next apply sweep makes it cloud-managed",
        "vip": "excluded from the sweep (ENFORCE_EXCLUDE)",
        "room": "outside the sweep's ENFORCE_RECIPIENT_TYPES",
    }


def test_the_tenant_default_on_while_a_mailbox_may_be_on_premises_fails() -> None:
    """The default is on too early when a synced mail user carries an ExchangeGuid; off is a warning."""
    remote = MailUserFacts("m1", "Remote", "remote@contoso.com", "1c2d3e4f-0000-4000-8000-000000000001")
    plain = MailUserFacts("m2", "Plain", "plain@contoso.com", ZERO_GUID)
    on = checks(inventory(mail_users=[remote, plain]))["tenant-default"]
    assert on.status == "fail" and [f.id for f in on.objects] == ["m1"]
    off = checks(inventory(org=OrgFacts(default_cloud_managed=False)))["tenant-default"]
    assert off.status == "warn"
    unknown = checks(inventory(org=OrgFacts(default_cloud_managed=None)))["tenant-default"]
    assert unknown.status == "manual"


def test_synced_mail_users_fail_only_when_one_has_a_mailbox_guid() -> None:
    """Plain synced mail users are a warning; a remote mailbox's GUID (a mailbox left on-premises) fails."""
    plain = MailUserFacts("m2", "Plain", "plain@contoso.com", ZERO_GUID)
    assert checks(inventory(mail_users=[plain]))["synced-mail-users"].status == "warn"
    remote = MailUserFacts("m1", "Remote", "remote@contoso.com", "1c2d3e4f-0000-4000-8000-000000000001")
    check = checks(inventory(mail_users=[plain, remote]))["synced-mail-users"]
    assert check.status == "fail" and [f.id for f in check.objects] == ["m1", "m2"]


def test_groups_are_listed_children_first_and_a_cycle_is_cut() -> None:
    """Conversion is not recursive: each group comes after the groups nested in it, even in a cycle."""
    groups = [
        DirectoryObject("top", "All staff", "all@contoso.com", "distribution group", False, ("mid",)),
        DirectoryObject("mid", "Sales", "sales@contoso.com", "distribution group", False, ("leaf", "sec")),
        DirectoryObject("leaf", "Sales DE", "de@contoso.com", "mail-enabled security group", False, ("top",)),
        DirectoryObject("sec", "Sales ACL", None, "security group", False),
        DirectoryObject("moved", "Moved", "moved@contoso.com", "distribution group", True),
    ]
    check = checks(inventory(groups=groups))["synced-groups"]
    order = [f.id for f in check.objects]
    assert order.index("leaf") < order.index("mid") < order.index("top")
    assert "sec" not in order and "moved" not in order  # not mail-enabled; already cloud-managed
    assert "Sales DE, Sales ACL" in next(f.detail for f in check.objects if f.id == "mid")


def test_an_unlicensed_user_mailbox_fails_and_a_disabled_exchange_plan_counts_as_none() -> None:
    """A user mailbox whose only Exchange plan is disabled is as unlicensed as one without any license."""
    found = inventory(
        mailboxes=[mailbox("ok"), mailbox("none"), mailbox("disabled"), mailbox("ghost")],
        users={
            "ok": user("ok"),
            "none": user("none", licensed=False),
            "disabled": user("disabled", disabled=(EXCHANGE_PLAN,)),
        },
    )
    check = checks(found)["unlicensed-user-mailboxes"]
    assert check.status == "fail"
    assert {f.id: f.detail for f in check.objects} == {
        "none": "no license with an enabled Exchange Online plan",
        "disabled": "no license with an enabled Exchange Online plan",
        "ghost": "its Entra user was not found",
    }


def test_a_shared_mailbox_keeps_its_license_with_an_archive_a_hold_or_over_50_gb() -> None:
    """Only a licensed shared mailbox under 50 GB with no archive and no hold is a saving."""
    boxes = [
        mailbox("save", "SharedMailbox"),
        mailbox("archive", "SharedMailbox", ArchiveGuid="8a2b4c6d-0000-4000-8000-000000000001"),
        mailbox("hold", "SharedMailbox", LitigationHoldEnabled=True),
        mailbox("inplace", "RoomMailbox", InPlaceHolds=["UniH7d8e"]),
        mailbox("big", "SharedMailbox"),
        mailbox("free", "SharedMailbox"),
    ]
    users = {b.id: user(b.id) for b in boxes} | {"free": user("free", licensed=False)}
    sizes = {"save": 2 * 1024**3, "big": 51 * 1024**3, "archive": 1, "hold": 1, "inplace": 1}
    check = checks(inventory(mailboxes=boxes, users=users, sizes=sizes))["licensed-shared-mailboxes"]
    assert [f.id for f in check.objects] == ["save"]
    assert check.objects[0].detail == "EXCHANGESTANDARD; 2.0 GB, no archive, no hold"


def test_primary_address_drift_compares_without_case() -> None:
    """A cloud-managed mailbox whose primary address is not Entra's mail is listed; a difference of case is not."""
    found = inventory(
        mailboxes=[mailbox("same"), mailbox("drift"), mailbox("onprem", IsExchangeCloudManaged=False)],
        users={
            "same": user("same", mail="SAME@contoso.com"),
            "drift": user("drift", mail="new.name@contoso.com"),
            "onprem": user("onprem", mail="other@contoso.com"),
        },
    )
    check = checks(found)["primary-address-drift"]
    assert [(f.id, f.detail) for f in check.objects] == [
        ("drift", "Exchange drift@contoso.com, Entra mail new.name@contoso.com")
    ]


def test_exchange_sizes_are_read_from_their_byte_count() -> None:
    """TotalItemSize is a display text; only its byte count is trusted."""
    assert size_bytes("1.234 GB (1,324,567,890 bytes)") == 1_324_567_890
    assert size_bytes("0 B (0 bytes)") == 0
    assert size_bytes("Unlimited") is None
    assert size_bytes(None) is None


def test_an_unreadable_organization_makes_its_checks_manual_instead_of_failing_the_report() -> None:
    """Without Get-OrganizationConfig the default, the hybrid leftovers and the license saving cannot be judged."""
    found = inventory(org=None, errors={"organization": "Exchange denied Get-OrganizationConfig"})
    result = checks(found)
    for check_id in ("tenant-default", "hybrid-configuration", "licensed-shared-mailboxes"):
        assert result[check_id].status == "manual" and "Get-OrganizationConfig" in (result[check_id].error or "")


def test_the_default_off_while_a_mailbox_is_still_on_premises_is_right() -> None:
    """Off is what Microsoft asks for while remote mailboxes still have their mailbox on-premises: a pass."""
    remote = MailUserFacts("m1", "Remote", "remote@contoso.com", "1c2d3e4f-0000-4000-8000-000000000001")
    check = checks(inventory(org=OrgFacts(default_cloud_managed=False), mail_users=[remote]))["tenant-default"]
    assert check.status == "pass"


def test_an_organization_wide_retention_policy_holds_every_shared_mailbox_it_does_not_exclude() -> None:
    """A shared mailbox under an org-wide policy keeps its license; one excluded from it (-mbx...) is a saving."""
    policy = "mbx0c6f2a4e9b1d4c3aa8e5f7b9d1c3e5a7:2"
    boxes = [
        mailbox("held", "SharedMailbox"),
        mailbox("excluded", "SharedMailbox", InPlaceHolds=["-mbx0c6f2a4e9b1d4c3aa8e5f7b9d1c3e5a7"]),
    ]
    found = inventory(
        mailboxes=boxes,
        users={b.id: user(b.id) for b in boxes},
        sizes={"held": 1024, "excluded": 1024},
        org=OrgFacts(default_cloud_managed=True, retention_holds=(policy,)),
    )
    assert [f.id for f in checks(found)["licensed-shared-mailboxes"].objects] == ["excluded"]
    assert boxes[0].license_needed((policy,)) == f"organization-wide retention policy {policy}"


def test_a_shared_mailbox_whose_size_could_not_be_read_is_listed_as_such() -> None:
    """An unread size is not a silent pass: the mailbox is listed, and its detail says the size is unknown."""
    box = mailbox("unknown", "SharedMailbox")
    check = checks(inventory(mailboxes=[box], users={"unknown": user("unknown")}, sizes={"unknown": None}))
    (finding,) = check["licensed-shared-mailboxes"].objects
    assert finding.detail.endswith("its size could not be read")


def test_groups_nested_in_each_other_and_unread_members_are_called_out() -> None:
    """A cycle cannot be ordered, and a group whose members could not be read may hide one: both are said."""
    groups = [
        DirectoryObject("a", "A", "a@contoso.com", "distribution group", False, ("b",)),
        DirectoryObject("b", "B", "b@contoso.com", "distribution group", False, ("a",)),
        DirectoryObject("c", "C", "c@contoso.com", "distribution group", False, children_read=False),
    ]
    details = {f.id: f.detail for f in checks(inventory(groups=groups))["synced-groups"].objects}
    assert "break the cycle in AD first" in details["b"]
    assert "could not be read" in details["c"]
