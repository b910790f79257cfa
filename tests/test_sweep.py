"""The cloud-management sweep against the sandbox: report, brake, apply under faults, budget, counts."""

from __future__ import annotations

import math

import pytest

from shared.enforcement import ListedMailbox, make_plan
from shared.errors import PermissionDeniedError
from shared.logs import capture_logs
from shared.runs import run_sweep as journaled_sweep
from shared.settings import Settings
from shared.wiring import Clients

ALL_TYPES = frozenset({"UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox"})


def run_sweep(*, apply: bool, progress=None):
    return journaled_sweep(Clients.from_settings(Settings.from_env()), apply=apply, progress=progress)


def record(upn: str, kind: str = "UserMailbox", synced: bool = True, managed: bool = False) -> dict[str, object]:
    return {
        "ExternalDirectoryObjectId": f"id-{upn}",
        "UserPrincipalName": upn,
        "PrimarySmtpAddress": f"smtp-{upn}",
        "RecipientTypeDetails": kind,
        "IsDirSynced": synced,
        "IsExchangeCloudManaged": managed,
    }


def test_b11_the_plan_is_the_reference_pipeline_filter() -> None:
    """Candidates are exactly dir-synced, in-scope, not cloud-managed, not excluded (B11's Where clause)."""
    records = [
        record("a"),
        record("b", managed=True),
        record("c", synced=False),
        record("d", kind="SchedulingMailbox"),
        record("e"),
        record("f"),
        record("g"),
    ]
    plan = make_plan(records, ALL_TYPES, frozenset({"e", "id-f", "smtp-g"}))
    assert [m.upn for m in plan.candidates] == ["a"]
    assert (plan.scanned, plan.dir_synced, plan.already_cloud_managed, plan.out_of_scope, plan.excluded) == (
        7,
        6,
        1,
        1,
        3,
    )
    assert make_plan(records, ALL_TYPES, frozenset({"e", "id-f", "smtp-g"})) == plan


def test_a_mailbox_without_directory_id_is_addressed_by_upn() -> None:
    """The write identity is the ExternalDirectoryObjectId, or the UPN when there is none."""
    assert ListedMailbox.from_record({"UserPrincipalName": "x@contoso.com"}).identity == "x@contoso.com"


def test_report_mode_makes_zero_writes(env, sandbox) -> None:
    """A report run lists and plans but sends no Set-Mailbox at all."""
    report = run_sweep(apply=False)
    assert (report.mode, report.candidates, report.changed) == ("report", 6, 0)
    stats = sandbox.stats()
    assert "Set-Mailbox" not in stats["commands"] and stats["writes"] == {}


def test_the_brake_makes_zero_writes(env, sandbox, monkeypatch) -> None:
    """More candidates than ENFORCE_MAX_CHANGES: nothing changes and the report says why."""
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "5")
    report = run_sweep(apply=True)
    assert report.brake_engaged and report.changed == 0 and report.candidates == 6
    assert "ENFORCE_MAX_CHANGES=5" in report.notes[0]
    assert sandbox.stats()["writes"] == {}


def test_apply_over_thousands_under_faults_flips_exactly_the_expected_set(env, sandbox, monkeypatch) -> None:
    """3,000 mailboxes with exclusions, throttling and faults: exactly the expected set flips, no other is written."""
    sandbox.reset({"generate": {"mailboxes": 3000, "candidates": 400, "seed": 3}})
    before = sandbox.mailboxes()
    candidates = [m for m in before if not m["cloudManaged"]]
    excluded = candidates[:10]
    exclude = [m["upn"].upper() for m in excluded[:5]] + [m["id"] for m in excluded[5:]]
    expected = {m["id"] for m in candidates[10:]}
    monkeypatch.setenv("ENFORCE_EXCLUDE", ",".join(exclude))
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "0")
    monkeypatch.setenv("ENFORCE_CONCURRENCY", "6")
    monkeypatch.setenv("HTTP_MAX_ATTEMPTS", "12")
    sandbox.knobs(
        concurrency_limit=4,
        latency=0.01,
        retry_after=0.05,
        fault_503_rate=0.05,
        fault_item_429_rate=0.05,
        fault_empty_error_rate=0.05,
        fault_drop_rate=0.02,
        seed=11,
    )

    report = run_sweep(apply=True)

    after = {m["id"]: m for m in sandbox.mailboxes()}
    flipped = {i for i, m in after.items() if m["cloudManaged"]} - {m["id"] for m in before if m["cloudManaged"]}
    stats = sandbox.stats()
    assert flipped == expected, report.failures
    assert set(stats["writes"]) <= expected
    assert (report.changed, report.failed, report.excluded, report.candidates) == (390, 0, 10, 390)
    assert (report.scanned, report.already_cloud_managed) == (3000, 2600)
    assert stats["throttled"] > 0 and sum(stats["faults"].values()) > 0
    assert stats["retryAfterViolations"] == []


def test_a_request_rate_limit_slows_the_sweep_but_loses_nothing(env, sandbox, monkeypatch) -> None:
    """Under a tenant request-rate limit the sweep waits as told and still flips every candidate."""
    sandbox.reset({"generate": {"mailboxes": 300, "candidates": 120}})
    sandbox.knobs(requests_per_second=20, retry_after=0.05)
    monkeypatch.setenv("HTTP_MAX_ATTEMPTS", "20")
    report = run_sweep(apply=True)
    stats = sandbox.stats()
    assert (report.changed, report.failed) == (120, 0)
    assert stats["retryAfterViolations"] == []


def test_report_counts_equal_the_tenant_truth(env, sandbox, monkeypatch) -> None:
    """Every count of the report matches what the tenant holds."""
    monkeypatch.setenv("ENFORCE_EXCLUDE", "vip@contoso.com")
    monkeypatch.setenv("ENFORCE_RECIPIENT_TYPES", "UserMailbox,SharedMailbox")
    truth = sandbox.mailboxes()
    synced = [m for m in truth if m["dirSynced"]]
    in_scope = [m for m in synced if m["recipientTypeDetails"] in ("UserMailbox", "SharedMailbox")]
    report = run_sweep(apply=False)
    assert report.scanned == len(synced)
    assert report.dir_synced == len(synced)
    assert report.out_of_scope == len(synced) - len(in_scope)
    assert report.already_cloud_managed == sum(m["cloudManaged"] for m in in_scope)
    assert report.excluded == 1
    assert report.candidates == sum(not m["cloudManaged"] for m in in_scope) - 1


def test_requests_are_pages_plus_one_batch_per_ten_candidates(env, sandbox) -> None:
    """Without faults a sweep costs the organization read, the pages and ceil(candidates / 10) batches."""
    sandbox.reset({"generate": {"mailboxes": 2500, "candidates": 253}})
    report = run_sweep(apply=True)
    requests = sandbox.stats()["requests"]
    assert report.changed == 253
    assert requests == {
        "InvokeCommand Get-OrganizationConfig": 1,
        "InvokeCommand Get-Mailbox": 3,
        "$batch Set-Mailbox": math.ceil(253 / 10),
    }


def test_unclear_writes_are_settled_by_reading_back(env, sandbox) -> None:
    """Writes answered with an empty error are read back; those that applied count as changed."""
    sandbox.knobs(fault_empty_error_rate=1.0)
    report = run_sweep(apply=True)
    assert (report.changed, report.failed) == (6, 0)
    assert sandbox.stats()["requests"]["$batch Get-Mailbox"] == 1
    assert all(m["cloudManaged"] for m in sandbox.mailboxes() if m["upn"] != "SharedCloudOnly@contoso.onmicrosoft.com")


def test_a_second_run_has_nothing_left_to_do(env, sandbox) -> None:
    """After an apply run, the next run finds no candidates and writes nothing (idempotent)."""
    run_sweep(apply=True)
    writes = sandbox.stats()["writes"]
    report = run_sweep(apply=True)
    assert (report.candidates, report.changed) == (0, 0)
    assert sandbox.stats()["writes"] == writes


def test_the_time_budget_stops_cleanly_and_the_next_run_finishes(env, sandbox, monkeypatch) -> None:
    """A run out of time stops submitting, reports what it did, and the next run completes the rest."""
    sandbox.reset({"generate": {"mailboxes": 600, "candidates": 600}})
    sandbox.knobs(latency=0.05)
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "0")
    monkeypatch.setenv("ENFORCE_CONCURRENCY", "1")
    monkeypatch.setenv("ENFORCE_TIME_BUDGET_SECONDS", "0.6")
    first = run_sweep(apply=True)
    assert not first.complete and first.not_attempted > 0 and first.failed == 0
    assert first.changed + first.not_attempted == 600
    assert "ENFORCE_TIME_BUDGET_SECONDS" in first.notes[-1]
    monkeypatch.setenv("ENFORCE_TIME_BUDGET_SECONDS", "120")
    monkeypatch.setenv("ENFORCE_CONCURRENCY", "4")
    second = run_sweep(apply=True)
    assert second.complete and second.candidates == first.not_attempted == second.changed
    assert all(m["cloudManaged"] for m in sandbox.mailboxes())


def test_only_the_configured_recipient_types_are_touched(env, sandbox, monkeypatch) -> None:
    """With ENFORCE_RECIPIENT_TYPES=UserMailbox, shared, room and equipment mailboxes see no write."""
    monkeypatch.setenv("ENFORCE_RECIPIENT_TYPES", "UserMailbox")
    report = run_sweep(apply=True)
    touched = {m["recipientTypeDetails"] for m in sandbox.mailboxes() if m["id"] in sandbox.stats()["writes"]}
    assert touched == {"UserMailbox"} and report.out_of_scope == 3


def test_the_tenant_default_is_reported(env, sandbox) -> None:
    """When the tenant-wide default is on, the report says so."""
    sandbox.reset({"tenant": {"tenantDefaultCloudManaged": True}, "users": []})
    report = run_sweep(apply=False)
    assert report.tenant_default_cloud_managed is True
    assert "tenant default is on" in report.notes[0]


def test_a_token_without_the_exchange_role_stops_the_sweep(env, sandbox) -> None:
    """Without Exchange.ManageAsApp the sweep fails with an error that names the role to grant."""
    sandbox.knobs(roles={"https://outlook.office365.com": []})
    with pytest.raises(PermissionDeniedError, match="Exchange.ManageAsApp"):
        run_sweep(apply=True)
    assert sandbox.stats()["writes"] == {}


def test_progress_reaches_the_total(env, sandbox) -> None:
    """The progress callback counts every candidate, ending at the total."""
    seen: list[tuple[int, int]] = []
    run_sweep(apply=True, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6) and len(seen) == 6


def test_every_flip_leaves_one_audit_event_with_the_run_correlation_id(env, sandbox) -> None:
    """Each mailbox the sweep flips emits one structured audit event (before false, after true) tagged with the run."""
    with capture_logs("exoprov.audit") as logs:
        report = run_sweep(apply=True)
    events = [entry["audit"] for entry in logs]
    assert len(events) == report.changed == 6
    assert all(e["before"] is False and e["after"] is True and e["correlationId"] == report.run_id for e in events)
    assert len({e["target"] for e in events}) == 6


def test_a_retry_after_beyond_the_time_budget_ends_the_run_as_incomplete(env, sandbox, monkeypatch) -> None:
    """A wait the service asks for that outlasts the budget stops the run cleanly: incomplete, nothing changed."""
    monkeypatch.setenv("ENFORCE_TIME_BUDGET_SECONDS", "1")
    sandbox.knobs(fault_429_rate=1.0, retry_after=5)
    report = run_sweep(apply=True)
    assert (report.complete, report.changed) == (False, 0)
    assert "time budget" in report.notes[-1]
    assert sandbox.stats()["writes"] == {} and sandbox.stats()["retryAfterViolations"] == []
