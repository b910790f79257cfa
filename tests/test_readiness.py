"""The readiness report against the sandbox tenant: each check finds the tenant's truth, and nothing is written.

The tenant is the default seed (docs/exchange-behaviour.md) plus one object for each check, so every check has
something to find; the expected objects below are that seed's truth, written out by hand.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import load_seed
from shared.readiness import build_report
from shared.readiness.model import ReadinessReport
from shared.runtime import run_scheduled_readiness
from shared.wiring import Clients
from tests.conftest import ROOT, SandboxHandle

REMOTE_GUID = "7d3f1a2b-5c6d-4e7f-8a9b-0c1d2e3f4a5b"
ADDED_USERS: list[dict[str, Any]] = [
    {"upn": "Unlicensed@contoso.com", "mail": "unlicensed@contoso.com", "mailboxType": "User", "cloudManaged": True},
    {"upn": "CloudUnlicensed@contoso.onmicrosoft.com", "mailboxType": "User", "dirSynced": False},
    *(
        {
            "upn": f"{name}@contoso.com",
            "mail": f"{name.lower()}@contoso.com",
            "mailboxType": kind,
            "licenses": ["EXCHANGESTANDARD"],
            "cloudManaged": True,
            "accountEnabled": False,
            **extra,
        }
        for name, kind, extra in (
            ("SharedLicensed", "Shared", {"mailboxSizeGB": 3}),
            ("SharedArchive", "Shared", {"archive": True}),
            ("SharedHold", "Shared", {"litigationHold": True}),
            ("SharedBig", "Shared", {"mailboxSizeGB": 60}),
            ("RoomInPlaceHold", "Room", {"inPlaceHolds": ["UniH7d8e9f0a-1b2c-3d4e-5f60-718293a4b5c6"]}),
        )
    ),
    {
        "upn": "Drifted@contoso.com",
        "mail": "drifted@contoso.com",
        "primarySmtpAddress": "renamed@contoso.com",
        "licenses": ["EXCHANGESTANDARD"],
        "mailboxType": "User",
        "cloudManaged": True,
    },
    {
        "upn": "RemoteMailbox@contoso.com",
        "mailNickname": "RemoteMailbox",
        "mail": "remote@contoso.com",
        "targetAddress": "remote@contoso.mail.onmicrosoft.com",
        "exchangeGuid": REMOTE_GUID,
    },
]
# What each check must find in that tenant, by the name the report shows (UPN, display name or identity).
TRUTH: dict[str, tuple[str, list[str]]] = {
    "mailboxes-not-cloud-managed": (
        "fail",
        [
            "UserNoMailWithEXO@contoso.com",
            "UserWithMailWithEXO@contoso.com",
            "UserExcluded@contoso.com",
            "SharedSynced@contoso.com",
            "RoomSynced@contoso.com",
            "EquipmentSynced@contoso.com",
        ],
    ),
    "tenant-default": ("pass", []),  # off, as it must be while RemoteMailbox still has its mailbox on-premises
    "synced-mail-users": ("fail", ["RemoteMailbox", "MailUser1"]),
    "synced-contacts": ("warn", ["ContactWithMail"]),
    "synced-groups": ("warn", ["GroupGSWithMail", "GroupGDWithMail"]),  # the member group first
    "unlicensed-user-mailboxes": ("fail", ["Unlicensed@contoso.com", "CloudUnlicensed@contoso.onmicrosoft.com"]),
    "licensed-shared-mailboxes": ("warn", ["SharedLicensed@contoso.com"]),
    "primary-address-drift": ("warn", ["Drifted@contoso.com"]),
    "hybrid-configuration": (
        "warn",
        [
            "5c1e9f0a-3b7d-4e2a-9c48-0d6f2b8a71e3",
            "O365 to On-premises - 5c1e9f0a-3b7d-4e2a-9c48-0d6f2b8a71e3",
            "Inbound from 5c1e9f0a-3b7d-4e2a-9c48-0d6f2b8a71e3",
            "Outbound to 5c1e9f0a-3b7d-4e2a-9c48-0d6f2b8a71e3",
            "Hybrid Migration Endpoint - EWS (Default Web Site)",
            "HybridIOC - 5c1e9f0a-3b7d-4e2a-9c48-0d6f2b8a71e3",
            "App relay",  # made by hand: listed for review, not for removal
        ],
    ),
    "sync-client-version": ("manual", []),
}
# Nothing of the old organization is left: cloud-managed, licensed as needed, no hybrid, groups moved.
READY_SEED: dict[str, Any] = {
    "skus": load_seed("default")["skus"],
    "tenant": {
        "id": "6f1c7c4e-0000-4000-8000-00000000c0de",
        "domain": "contoso.onmicrosoft.com",
        "tenantDefaultCloudManaged": True,
    },
    "users": [
        {
            "upn": "adele@contoso.com",
            "mail": "adele@contoso.com",
            "licenses": ["EXCHANGESTANDARD"],
            "mailboxType": "User",
            "cloudManaged": True,
        },
        {
            "upn": "info@contoso.com",
            "mail": "info@contoso.com",
            "mailboxType": "Shared",
            "cloudManaged": True,
            "accountEnabled": False,
        },
        {
            "upn": "cloud@contoso.onmicrosoft.com",
            "licenses": ["EXCHANGESTANDARD"],
            "mailboxType": "User",
            "dirSynced": False,
        },
    ],
    "contacts": [{"name": "Partner", "mail": "partner@fabrikam.com", "dirSynced": False}],
    # Synced once, then moved to the cloud: a converted group leaves the synced listing.
    "groups": [{"name": "Sales", "mail": "sales@contoso.com", "securityEnabled": False, "cloudManaged": True}],
}


def readiness_seed() -> dict[str, Any]:
    seed = copy.deepcopy(load_seed("default"))
    seed["users"] += ADDED_USERS
    # Objects that look like hybrid leftovers but are not: a partner's connector and a sharing relationship.
    seed["hybrid"]["inboundConnectors"].append({"name": "From Fabrikam", "connectorType": "Partner"})
    seed["hybrid"]["inboundConnectors"].append({"name": "App relay", "connectorSource": "AdminUI"})
    seed["hybrid"]["organizationRelationships"].append({"name": "Fabrikam", "domainNames": ["fabrikam.com"]})
    return seed


def writes(stats: dict[str, Any]) -> dict[str, int]:
    """Every call that could change the tenant: Exchange cmdlets other than Get-, and Graph writes."""
    exchange = {name: n for name, n in stats["commands"].items() if not name.startswith("Get-")}
    return {**exchange, "graph": stats["graphWrites"]}


def fresh_report(sandbox: SandboxHandle, settings_env: dict[str, str], seed: Any, **knobs: Any) -> ReadinessReport:
    from shared.settings import Settings

    sandbox.reset(seed, **knobs)
    return build_report(Clients.from_settings(Settings.from_env()))


def readiness_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`exoprov readiness ARGS` as a person runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "readiness", *args],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def found(report: ReadinessReport) -> dict[str, tuple[str, list[str]]]:
    return {check.id: (check.status, [finding.name for finding in check.objects]) for check in report.checks}


def test_each_check_finds_exactly_the_tenants_objects(sandbox: SandboxHandle, env: dict[str, str]) -> None:
    """Every check's status and objects equal the seeded truth, in the report's order, and nothing is written."""
    report = fresh_report(sandbox, env, readiness_seed())
    result = found(report)
    for check_id, (status, names) in TRUTH.items():
        ordered = check_id == "synced-groups"
        got_status, got = result[check_id]
        assert got_status == status, f"{check_id}: {got_status}, {got}"
        assert (got if ordered else sorted(got)) == (names if ordered else sorted(names)), check_id
    assert not report.ready
    assert writes(sandbox.stats()) == {"graph": 0}


def test_the_report_costs_pages_and_batches_only(sandbox: SandboxHandle, env: dict[str, str]) -> None:
    """Exchange: two listings, one $batch, one statistics $batch; Graph: 6 requests. Never one per object."""
    report = fresh_report(sandbox, env, readiness_seed())
    assert report.requests == {"exchange": 4, "graph": 6}
    served = sandbox.stats()
    # Only licensed shared mailboxes without archive or hold, whose size decides: SharedLicensed and SharedBig.
    assert served["commands"].get("Get-MailboxStatistics") == 2
    assert sum(n for key, n in served["graphCalls"].items() if key.startswith("batch")) == 2


def test_with_throttled_batch_items_the_report_is_the_same(sandbox: SandboxHandle, env: dict[str, str]) -> None:
    """Graph and Exchange $batch items answered 429 wait their Retry-After and go again; the findings do not change."""
    calm = found(fresh_report(sandbox, env, readiness_seed()))
    stormy = fresh_report(
        sandbox, env, readiness_seed(), graph_batch_item_429_rate=0.3, fault_read_item_429_rate=0.3, retry_after=0.2
    )
    stats = sandbox.stats()
    assert stats["faults"].get("item_429") and stats["faults"].get("graph_batch_item_429"), stats["faults"]
    assert found(stormy) == calm
    assert stats["retryAfterViolations"] == []
    assert writes(stats) == {"graph": 0}


def test_a_source_of_authority_answered_in_learns_wrapped_shape_reads_the_same(
    sandbox: SandboxHandle, env: dict[str, str]
) -> None:
    """onPremisesSyncBehavior inside "value" (Learn's example) is read like the plain entity: same state read."""

    def states(report: ReadinessReport) -> list[str]:
        return [f.detail for check in ("synced-groups", "synced-contacts") for f in report.check(check).objects]

    calm = states(fresh_report(sandbox, env, readiness_seed()))
    assert all("not converting" in detail for detail in calm), calm  # the state was read, not guessed
    assert states(fresh_report(sandbox, env, readiness_seed(), graph_sync_behavior_wrapped=True)) == calm


def test_a_tenant_with_nothing_left_passes_every_check(sandbox: SandboxHandle, env: dict[str, str]) -> None:
    """Cloud-managed mailboxes, no mail users, groups moved, no hybrid, default on: all pass but the manual one."""
    report = fresh_report(sandbox, env, READY_SEED)
    assert {c.id: c.status for c in report.checks if c.status != "pass"} == {"sync-client-version": "manual"}
    assert report.ready


def test_the_tenant_default_on_too_early_fails(sandbox: SandboxHandle, env: dict[str, str]) -> None:
    """With the default on and a synced mail user still carrying its mailbox's GUID, the default check fails."""
    seed = readiness_seed()
    seed["tenant"]["tenantDefaultCloudManaged"] = True
    check = fresh_report(sandbox, env, seed).check("tenant-default")
    assert (check.status, [f.name for f in check.objects]) == ("fail", ["RemoteMailbox"])


def test_a_missing_graph_role_makes_its_checks_manual_and_names_the_role(
    sandbox: SandboxHandle, env: dict[str, str]
) -> None:
    """Without GroupMember.Read.All the group check cannot pass: it is manual, says why, and the report is not ready."""
    from sandbox.tokens import GRAPH_RESOURCE

    seed = READY_SEED
    roles = sandbox.knobs()["roles"]
    roles[GRAPH_RESOURCE] = [r for r in roles[GRAPH_RESOURCE] if r != "GroupMember.Read.All"]
    report = fresh_report(sandbox, env, seed, roles=roles)
    check = report.check("synced-groups")
    assert check.status == "manual" and "GroupMember.Read.All" in (check.error or "")
    assert report.check("synced-contacts").status == "pass"
    assert not report.ready


def test_the_timer_writes_the_days_report_and_latest(sandbox: SandboxHandle, env: dict[str, str], azurite: Any) -> None:
    """The scheduled run stores JSON and HTML for the day and as latest in exoprov-reports, with content types."""
    sandbox.reset(readiness_seed())
    written = run_scheduled_readiness()
    assert [name.rsplit("/", 1)[1].split(".")[0] for name in written][2:] == ["latest", "latest"]
    from shared.queues import Storage
    from shared.settings import Settings

    container = Storage(Settings.from_env()).reports_container
    latest = json.loads(container.download_blob("readiness/latest.json").readall())
    assert [check["id"] for check in latest["checks"]][0] == "mailboxes-not-cloud-managed" and not latest["ready"]
    page = container.get_blob_client("readiness/latest.html")
    assert str(page.get_blob_properties().content_settings.content_type).startswith("text/html")
    assert b"Not ready yet" in page.download_blob().readall()


def test_the_command_prints_the_table_writes_the_files_and_exits_4_when_not_ready(
    sandbox: SandboxHandle, env: dict[str, str], tmp_path: Path
) -> None:
    """`exoprov readiness --html --csv` prints the verdict and every check, writes both exports, and exits 4."""
    sandbox.reset(readiness_seed())
    html, csv_dir = tmp_path / "report.html", tmp_path / "csv"
    done = readiness_command(env, "--html", str(html), "--csv", str(csv_dir))
    assert done.returncode == 4, done.stderr
    assert "NOT READY: 3 fail, 5 warn, 1 manual, 1 pass" in done.stdout
    for check_id in TRUTH:
        assert check_id in done.stdout
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.stem for p in csv_dir.iterdir()) == sorted(TRUTH)
    assert "SharedLicensed@contoso.com" in (csv_dir / "licensed-shared-mailboxes.csv").read_text("utf-8-sig")


def test_the_command_exits_0_for_a_ready_tenant(sandbox: SandboxHandle, env: dict[str, str]) -> None:
    """A ready tenant: the verdict says so and the exit code is 0, so a script can gate on it."""
    sandbox.reset(READY_SEED)
    done = readiness_command(env, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ready"] is True


def test_a_group_with_more_than_999_member_groups_has_them_all_read(
    sandbox: SandboxHandle, env: dict[str, str]
) -> None:
    """A batched member read stops at 999 and links on; the rest is read from the link, so no child is missed."""
    children = [{"name": f"Team {i:04d}", "securityEnabled": True} for i in range(1001)]
    parent = {
        "name": "Everyone",
        "mail": "everyone@contoso.com",
        "securityEnabled": False,
        "members": [c["name"] for c in children],
    }
    seed = {**READY_SEED, "groups": [parent, *children]}
    check = fresh_report(sandbox, env, seed).check("synced-groups")
    (everyone,) = check.objects
    assert "Team 0000" in everyone.detail and "Team 1000" in everyone.detail
    assert everyone.detail.count("Team ") == 1001


@pytest.fixture(autouse=True)
def _fresh_tokens(sandbox: SandboxHandle) -> None:
    """A reset sandbox signs with new keys; each test's clients are new, so none carries an old token."""
