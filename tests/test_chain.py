"""The provisioning chain end to end: HR request -> queues (Azurite) -> tenant (sandbox) -> one result each."""

from __future__ import annotations

from typing import Any

import pytest

from shared.logs import capture_logs
from shared.queues import REQUESTS, UNREADABLE
from tests.chain_helpers import collect_results, fresh_clients, request, run_worker, submit
from tests.conftest import CHAIN_SETTINGS, SandboxHandle

# One worker runs every test of this module: the batch below (a worker run of ~17 s) is then made once,
# not once per pytest-xdist process that happens to get one of its tests.
pytestmark = pytest.mark.xdist_group("chain-batch")

# Users created "on-premises" for the batch, as AD would hand them to directory sync.
BATCH_USERS: list[dict[str, Any]] = [
    {"upn": "new.nomail@contoso.com", "usageLocation": "DE"},
    {"upn": "new.mail@contoso.com", "mail": "jane.roe@contoso.com", "usageLocation": "DE"},
    {"upn": "shared.sales@contoso.com", "mail": "sales@contoso.com", "accountEnabled": False},
    {"upn": "room.paris@contoso.com", "mail": "room.paris@contoso.com"},
    {"upn": "beamer2@contoso.com", "mail": "beamer2@contoso.com"},
    {"upn": "beamer3@contoso.com", "mail": "beamer3@contoso.com"},
    {"upn": "shared.keep@contoso.com", "mail": "keep@contoso.com"},
    {"upn": "late.joiner@contoso.com", "syncDelaySeconds": 2},
    {"upn": "no.location@contoso.com"},
    {"upn": "twice@contoso.com"},
    {
        "upn": "big.shared@contoso.com",
        "licenses": ["EXCHANGESTANDARD"],
        "mailboxType": "User",
        "mailboxSizeGB": 60,
        "usageLocation": "DE",
    },
    {
        "upn": "archived.shared@contoso.com",
        "licenses": ["EXCHANGESTANDARD"],
        "mailboxType": "User",
        "archive": True,
        "usageLocation": "DE",
    },
    {
        "upn": "group.licensed@contoso.com",
        "licenses": ["EXCHANGESTANDARD"],
        "licenseInherited": True,
        "mailboxType": "User",
        "usageLocation": "DE",
    },
]
BATCH_REQUESTS = [
    request("user-nomail", "new.nomail@contoso.com"),
    request("user-mail", "new.mail@contoso.com"),
    request("shared", "shared.sales@contoso.com", mailboxType="Shared"),
    request("room", "room.paris@contoso.com", mailboxType="Room", usageLocation="FR"),
    request("equipment", "beamer2@contoso.com", mailboxType="Equipment"),
    request("equipment-keep", "beamer3@contoso.com", mailboxType="Equipment", keepLicense=True),
    request("shared-keep", "shared.keep@contoso.com", mailboxType="Shared", keepLicense=True),
    request("late", "late.joiner@contoso.com", mailboxType="Shared"),
    request("never", "never.synced@contoso.com"),
    request("not-allowed", "new.nomail@contoso.com", license="SPE_E5"),
    request("invalid", "not-a-upn", mailboxType="Castle"),
    request("no-free", "no.location@contoso.com", license="EXCHANGEENTERPRISE"),
    request("twice", "twice@contoso.com", mailboxType="Shared"),
    request("twice", "twice@contoso.com", mailboxType="Shared"),
    request("big", "big.shared@contoso.com", mailboxType="Shared"),
    request("archive", "archived.shared@contoso.com", mailboxType="Shared"),
    request("inherited", "group.licensed@contoso.com", mailboxType="Shared"),
]


@pytest.fixture(scope="module")
def batch(sandbox_process: SandboxHandle, azurite) -> dict[str, Any]:
    """Every scenario above through one worker run; what the tenant and the logs looked like afterwards."""
    from tests.conftest import APP_SETTINGS, empty_storage

    with pytest.MonkeyPatch.context() as patch:
        for name in APP_SETTINGS:
            patch.delenv(name, raising=False)
        settings = {
            **sandbox_process.env,
            **CHAIN_SETTINGS,
            "HTTP_BACKOFF_SECONDS": "0.05",
            "AzureWebJobsStorage": azurite.connection_string,
        }
        for name, value in settings.items():
            patch.setenv(name, value)
        sandbox_process.reset(mailbox_delay=1.0, conversion_lag=0.5)
        for user in BATCH_USERS:
            sandbox_process.add_user(**user)
        clients = fresh_clients()
        empty_storage(clients.storage())
        submit(clients, *BATCH_REQUESTS[:-1])
        submit(clients, BATCH_REQUESTS[-1], base64_encoded=True)
        with capture_logs() as logs:
            exit_code = run_worker(clients)
        return {
            "exit": exit_code,
            "results": collect_results(clients),
            "stats": sandbox_process.stats(),
            "licenses": sandbox_process.licenses(),
            "mailboxes": {m["upn"]: m for m in sandbox_process.mailboxes()},
            "audit": [entry["audit"] for entry in logs if "audit" in entry],
            "knobs": sandbox_process.knobs(),
        }


def only(batch: dict[str, Any], request_id: str) -> dict[str, Any]:
    (result,) = batch["results"][request_id]
    assert isinstance(result, dict)
    return result


def test_every_request_ends_with_exactly_one_result(batch) -> None:
    """Seventeen messages, sixteen requestIds: sixteen results, one each, and the worker ends idle."""
    assert batch["exit"] == 0
    assert sorted(batch["results"]) == sorted({r["requestId"] for r in BATCH_REQUESTS})
    assert all(len(results) == 1 for results in batch["results"].values())


def test_the_batch_runs_with_entra_replication_lag(batch) -> None:
    """Every scenario of the batch passes while Graph reads lag behind writes, as Entra's do."""
    assert batch["knobs"]["replication_lag"] >= 1.0


def test_b3_user_mailbox_without_mail_gets_the_upn_as_primary(batch) -> None:
    """A licensed user without `mail` ends as a cloud-managed UserMailbox whose primary is the UPN."""
    result = only(batch, "user-nomail")
    assert result["status"] == "succeeded"
    assert (result["recipientTypeDetails"], result["primarySmtpAddress"]) == ("UserMailbox", "new.nomail@contoso.com")
    assert result["isExchangeCloudManaged"] is True and result["licenseRemoved"] is False


def test_b4_user_mailbox_with_mail_gets_mail_as_primary(batch) -> None:
    """A licensed user with `mail` gets that address as primary; the license stays on a user mailbox."""
    result = only(batch, "user-mail")
    assert result["primarySmtpAddress"] == "jane.roe@contoso.com"
    assert batch["licenses"]["new.mail@contoso.com"] == ["4b9405b0-7788-4568-add1-99614e613b69"]


def test_b15_shared_mailbox_is_converted_then_unlicensed(batch) -> None:
    """Shared: licensed, converted, verified as SharedMailbox, and only then is the license removed."""
    result = only(batch, "shared")
    assert (result["status"], result["recipientTypeDetails"], result["licenseRemoved"]) == (
        "succeeded",
        "SharedMailbox",
        True,
    )
    assert batch["licenses"]["shared.sales@contoso.com"] == []
    assert batch["mailboxes"]["shared.sales@contoso.com"]["cloudManaged"] is True


@pytest.mark.parametrize(("request_id", "details"), [("room", "RoomMailbox"), ("equipment", "EquipmentMailbox")])
def test_b14_rooms_and_equipment_lose_the_temporary_license(batch, request_id: str, details: str) -> None:
    """Room and equipment mailboxes are converted and unlicensed unless keepLicense is set."""
    result = only(batch, request_id)
    assert (result["recipientTypeDetails"], result["licenseRemoved"]) == (details, True)


@pytest.mark.parametrize(
    ("request_id", "upn", "details"),
    [
        ("equipment-keep", "beamer3@contoso.com", "EquipmentMailbox"),
        ("shared-keep", "shared.keep@contoso.com", "SharedMailbox"),
    ],
)
def test_keep_license_keeps_it(batch, request_id: str, upn: str, details: str) -> None:
    """keepLicense: the mailbox is converted and keeps its license (a conferencing room, a big archive...)."""
    result = only(batch, request_id)
    assert (result["status"], result["recipientTypeDetails"], result["licenseRemoved"]) == ("succeeded", details, False)
    assert batch["licenses"][upn] == ["4b9405b0-7788-4568-add1-99614e613b69"]


def test_license_removal_always_follows_the_verified_conversion(batch) -> None:
    """No license was ever removed from a mailbox that still read UserMailbox (the sandbox records that hazard)."""
    assert batch["stats"]["hazards"] == []
    removals = [e["target"] for e in batch["audit"] if e["action"] == "license.remove"]
    assert sorted(removals) == sorted(
        [
            "shared.sales@contoso.com",
            "room.paris@contoso.com",
            "beamer2@contoso.com",
            "late.joiner@contoso.com",
            "twice@contoso.com",
        ]
    )


def test_a_user_that_syncs_late_is_waited_for(batch) -> None:
    """A user that appears in Entra seconds later is found by a later poll and provisioned."""
    assert only(batch, "late")["status"] == "succeeded"


def test_a_user_that_never_syncs_fails_with_user_not_found(batch) -> None:
    """After SYNC_WAIT_MINUTES the request fails with user_not_found and says what to check."""
    result = only(batch, "never")
    assert result["error"]["code"] == "user_not_found" and "sync scope" in result["error"]["message"]


def test_a_license_outside_the_allowlist_is_refused(batch) -> None:
    """A SKU not in ALLOWED_LICENSES fails at once with license_not_allowed, naming the allowed ones."""
    result = only(batch, "not-allowed")
    assert result["error"]["code"] == "license_not_allowed" and "EXCHANGESTANDARD" in result["error"]["message"]
    assert result["userPrincipalName"] == "new.nomail@contoso.com"


def test_an_invalid_request_is_refused_naming_the_field(batch) -> None:
    """An invalid request fails at once with invalid_request naming the first bad field."""
    result = only(batch, "invalid")
    assert result["status"] == "failed"
    assert result["error"]["code"] == "invalid_request" and result["error"]["message"].startswith("userPrincipalName")


def test_no_free_licenses_fails_with_no_licenses_available(batch) -> None:
    """A SKU without free units ends the request with no_licenses_available; nothing was assigned."""
    assert only(batch, "no-free")["error"]["code"] == "no_licenses_available"
    assert batch["licenses"]["no.location@contoso.com"] == []


def test_a_missing_usage_location_comes_from_the_request_or_the_default(batch) -> None:
    """A user without usageLocation gets the request's, else DEFAULT_USAGE_LOCATION; one that has one keeps it."""
    writes = {e["target"]: (e["before"], e["after"]) for e in batch["audit"] if e["action"] == "usageLocation"}
    assert writes["room.paris@contoso.com"] == (None, "FR")
    assert writes["late.joiner@contoso.com"] == writes["twice@contoso.com"] == (None, "DE")
    assert "new.nomail@contoso.com" not in writes


def test_the_same_request_twice_runs_once(batch) -> None:
    """A duplicate requestId gets no second chain: one result, one license added, one removed."""
    assert only(batch, "twice")["status"] == "succeeded"
    actions = [e["action"] for e in batch["audit"] if e["target"] == "twice@contoso.com"]
    assert actions.count("license.add") == 1 and actions.count("license.remove") == 1


def test_a_base64_request_is_accepted(batch) -> None:
    """A request sent as base64 text is decoded like a plain one (the last request of the batch)."""
    assert only(batch, "inherited")["requestId"] == "inherited"


def test_a_shared_mailbox_of_50_gb_or_more_keeps_its_license(batch) -> None:
    """Over 50 GB a shared mailbox needs its license: converted, license kept, and the result says why."""
    result = only(batch, "big")
    assert (result["status"], result["recipientTypeDetails"], result["licenseRemoved"]) == (
        "succeeded",
        "SharedMailbox",
        False,
    )
    assert "60.0 GB" in result["notes"][0]


def test_a_synced_mailbox_with_an_archive_keeps_its_license_though_archive_status_reads_none(batch) -> None:
    """ArchiveStatus reads None on this synced mailbox, but ArchiveGuid shows the archive: license kept."""
    result = only(batch, "archive")
    assert (result["status"], result["recipientTypeDetails"], result["licenseRemoved"]) == (
        "succeeded",
        "SharedMailbox",
        False,
    )
    assert result["notes"] == ["license kept: the mailbox has an archive"]
    assert batch["licenses"]["archived.shared@contoso.com"] == ["4b9405b0-7788-4568-add1-99614e613b69"]


def test_an_inherited_license_is_reported_not_fought(batch) -> None:
    """A license from a group is not removed: the request fails with license_inherited, the mailbox converted."""
    result = only(batch, "inherited")
    assert (
        result["error"]["code"] == "license_inherited"
        and "remove the user from that group" in result["error"]["message"]
    )
    assert batch["mailboxes"]["group.licensed@contoso.com"]["recipientTypeDetails"] == "SharedMailbox"


def test_every_write_leaves_one_audit_event_with_before_and_after(batch) -> None:
    """License, usageLocation and Set-Mailbox writes each emit a structured event naming the request."""
    assert {e["action"] for e in batch["audit"]} == {
        "usageLocation",
        "license.add",
        "license.remove",
        "Set-Mailbox -IsExchangeCloudManaged",
        "Set-Mailbox -Type",
    }
    assert all(e["requestId"] and e["target"] and "after" in e for e in batch["audit"])


def test_a_missing_usage_location_without_a_default_fails(chain_env, sandbox, monkeypatch) -> None:
    """No usageLocation anywhere: usage_location_missing, with where to set one."""
    monkeypatch.delenv("DEFAULT_USAGE_LOCATION")
    sandbox.add_user(upn="nowhere@contoso.com")
    clients = fresh_clients()
    submit(clients, request("nowhere", "nowhere@contoso.com"))
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["nowhere"]
    assert (
        result["error"]["code"] == "usage_location_missing" and "DEFAULT_USAGE_LOCATION" in result["error"]["message"]
    )


def test_a_poisoned_message_still_yields_a_result(chain_env, sandbox) -> None:
    """Graph down for good: the license step fails five times, lands on poison, and the requester still hears."""
    sandbox.add_user(upn="unlucky@contoso.com")
    sandbox.knobs(graph_fault_503_rate=1.0)
    clients = fresh_clients()
    submit(clients, request("unlucky", "unlucky@contoso.com"))
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["unlucky"]
    assert result["error"]["code"] == "internal_error" and "license step failed 5 times" in result["error"]["message"]
    assert "the last error: ServiceUnavailableError" in result["error"]["message"]


def test_an_unreadable_message_is_kept_for_a_person(chain_env) -> None:
    """A message with no requestId cannot be answered: it is parked on provision-unreadable, not lost."""
    clients = fresh_clients()
    submit(clients, "this is not JSON and names no request")
    assert run_worker(clients) == 0
    assert collect_results(clients) == {}
    parked = [m.content for m in clients.storage().queue(UNREADABLE).receive_messages()]
    assert parked == ["this is not JSON and names no request"]


def test_a_mailbox_that_never_comes_fails_with_mailbox_timeout(chain_env, sandbox, monkeypatch) -> None:
    """If Exchange creates no mailbox within MAILBOX_WAIT_MINUTES: mailbox_timeout, license left in place."""
    monkeypatch.setenv("MAILBOX_WAIT_MINUTES", "0.05")
    sandbox.knobs(mailbox_delay=600)
    sandbox.add_user(upn="slow@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("slow", "slow@contoso.com", mailboxType="Shared"))
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["slow"]
    assert result["error"]["code"] == "mailbox_timeout"
    assert sandbox.licenses()["slow@contoso.com"] != []


def test_a_conversion_that_never_shows_keeps_the_license(chain_env, sandbox, monkeypatch) -> None:
    """If the type never reads Shared within CONVERSION_WAIT_MINUTES: conversion_unverified, license kept."""
    monkeypatch.setenv("CONVERSION_WAIT_MINUTES", "0.05")
    sandbox.knobs(conversion_lag=600)
    sandbox.add_user(upn="stuck@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("stuck", "stuck@contoso.com", mailboxType="Shared"))
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["stuck"]
    assert result["error"]["code"] == "conversion_unverified" and result["recipientTypeDetails"] == "UserMailbox"
    assert sandbox.licenses()["stuck@contoso.com"] != [] and sandbox.stats()["hazards"] == []


def test_the_worker_times_out_with_exit_3_when_work_remains(chain_env, sandbox, monkeypatch) -> None:
    """--timeout: the worker gives up with exit 3 while a request is still waiting."""
    monkeypatch.setenv("SYNC_WAIT_MINUTES", "10")
    clients = fresh_clients()
    submit(clients, request("patient", "not.yet@contoso.com"))
    assert run_worker(clients, timeout=2) == 3
    assert clients.storage().pending((REQUESTS, "provision-license")) == 1
