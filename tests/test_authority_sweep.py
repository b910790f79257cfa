"""The group and contact sweep against the sandbox over HTTP: report, apply, order, brake, journal, undo, faults."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sandbox.server import load_seed
from shared.cli import format_report, format_undo
from shared.journal import Journal
from shared.runs import run_sweep, run_undo
from shared.settings import Settings
from shared.wiring import Clients

LEVELS_WITHOUT_MAIL = [["SoaChild", "SoaWithCloudMember"], ["SoaParent"], ["SoaGrandparent"]]
MAIL_ENABLED = ["GroupGDWithMail", "GroupGSWithMail", "SoaDistributionList", "SoaMailSecurity"]
SYNCED_CONTACTS = ["ContactWithMail", "SoaContact"]


@pytest.fixture
def soa(sandbox: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The default tenant with the source-of-authority objects, no read lag; the sweep enforces groups only."""
    seed = dict(load_seed("default"), withSourceOfAuthority=True)
    sandbox.reset(seed, replication_lag=0)
    monkeypatch.setenv("ENFORCE_OBJECTS", "groups")
    return sandbox


def sweep(*, apply: bool, **settings: str) -> dict[str, Any]:
    report = run_sweep(clients(**settings), apply=apply)
    return report.to_json()


def clients(**settings: str) -> Clients:
    """Clients on the test's environment plus `settings` (the process environment is left as it is)."""
    import os

    return Clients.from_settings(Settings.from_env({**os.environ, **settings}))


def converted(sandbox: Any) -> list[str]:
    return [entry["name"] for entry in sandbox.authority_log() if entry["isCloudManaged"]]


def groups_state(sandbox: Any) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in sandbox.directory_state()["groups"]}


def test_report_mode_lists_levels_and_writes_nothing(soa: Any) -> None:
    """Report mode reads (pages and $batches only) and plans children first; the tenant counts no write."""
    report = sweep(apply=False)["groups"]
    levels: dict[int, list[str]] = {}
    for item in report["candidateList"]:
        levels.setdefault(item["level"], []).append(item["displayName"])
    assert [sorted(names) for _, names in sorted(levels.items())] == LEVELS_WITHOUT_MAIL
    assert sorted(item["displayName"] for item in report["outOfScopeList"]) == MAIL_ENABLED
    stats = soa.stats()
    assert report["changed"] == 0 and stats["graphWrites"] == 0
    # 8 synced groups: one page, then 16 reads (state and member groups) in one $batch, and one more for the
    # state of GroupUSNoMail: nested in GroupGSWithMail, from AD, converted already (so not in the listing).
    assert stats["graphCalls"]["read: GET groups/onPremisesSyncBehavior"] == 9
    assert stats["graphCalls"]["batch: POST $batch"] == 2 and report["requests"] == 3


def test_b32_apply_converts_children_before_parents_and_never_a_mail_enabled_group(soa: Any) -> None:
    """The sandbox records each conversion in order: every child before its parent, no mail-enabled group."""
    report = sweep(apply=True)
    section = report["groups"]
    assert (section["changed"], section["failed"], section["unknown"]) == (4, 0, 0)
    order = converted(soa)
    assert sorted(order) == sorted(name for level in LEVELS_WITHOUT_MAIL for name in level)
    assert order.index("SoaChild") < order.index("SoaParent") < order.index("SoaGrandparent")
    state = groups_state(soa)
    assert all(state[name]["isCloudManaged"] is False for name in MAIL_ENABLED)
    assert state["SoaParent"]["onPremisesSyncEnabled"] is None  # converted: out of the synced listing
    assert soa.stats()["hazards"] == []


def test_b31_mail_enabled_groups_convert_with_the_opt_in_after_their_children(soa: Any) -> None:
    """With ENFORCE_MAIL_ENABLED_GROUPS=true the lists convert too, each after the synced groups it holds."""
    report = sweep(apply=True, ENFORCE_MAIL_ENABLED_GROUPS="true")["groups"]
    assert report["changed"] == 8 and report["failed"] == 0
    order = converted(soa)
    assert order.index("GroupGSWithMail") < order.index("GroupGDWithMail")
    assert order.index("SoaChild") < order.index("SoaDistributionList")
    assert order.index("SoaParent") < order.index("SoaMailSecurity")
    assert any("managed in Exchange Online" in note for note in report["notes"])


def test_an_excluded_child_holds_its_parents_back_and_is_never_written(soa: Any) -> None:
    """ENFORCE_EXCLUDE by display name keeps the child in AD; its parent and grandparent are held back."""
    report = sweep(apply=True, ENFORCE_EXCLUDE="name:SoaChild")
    section = report["groups"]
    assert converted(soa) == ["SoaWithCloudMember"]
    held = {item["displayName"]: item["reason"] for item in section["heldBackList"]}
    assert set(held) == {"SoaParent", "SoaGrandparent"} and "SoaChild is excluded" in held["SoaParent"]
    assert report["unmatchedExclusions"] == []


def test_the_brake_is_counted_per_kind(soa: Any) -> None:
    """Each kind is held to ENFORCE_MAX_CHANGES on its own: six mailboxes and four groups pass a limit of six."""
    report = sweep(apply=True, ENFORCE_OBJECTS="mailboxes,groups", ENFORCE_MAX_CHANGES="6")
    assert (report["candidates"], report["groups"]["candidates"]) == (6, 4)
    assert not report["brakeEngaged"] and not report["groups"]["brakeEngaged"]
    assert report["changed"] == 6 and len(converted(soa)) == 4
    soa.reset(dict(load_seed("default"), withSourceOfAuthority=True), replication_lag=0)
    braked = sweep(apply=True, ENFORCE_OBJECTS="groups", ENFORCE_MAX_CHANGES="3")
    assert braked["groups"]["brakeEngaged"] is True and converted(soa) == []


def test_the_journal_holds_every_conversion_and_undo_takes_them_back_except_with_cloud_members(soa: Any) -> None:
    """Undo rolls back what the run converted; the group with a cloud-only member is left and its member named."""
    run = sweep(apply=True)
    entries = Journal(clients().storage().journal_container).run_entries(run["runId"])
    assert sorted(e.target for e in entries if e.outcome == "applied") == sorted(
        name for level in LEVELS_WITHOUT_MAIL for name in level
    )
    assert {e.action for e in entries} == {"group.isCloudManaged"}
    plan = run_undo(clients(), run["runId"], apply=False).to_json()["groups"]
    assert plan["candidates"] == 3 and soa.stats()["graphWrites"] == 4
    undone = run_undo(clients(), run["runId"], apply=True).to_json()
    section = undone["groups"]
    assert section["changed"] == 3 and section["failed"] == 0
    assert [b["displayName"] for b in section["blocked"]] == ["SoaWithCloudMember"]
    assert section["blocked"][0]["cloudOnlyMembers"] == ["CloudOnlyMember@contoso.onmicrosoft.com (user)"]
    state = groups_state(soa)
    assert state["SoaWithCloudMember"]["isCloudManaged"] is True
    assert state["SoaParent"]["isCloudManaged"] is False and state["SoaParent"]["onPremisesSyncEnabled"] is None
    assert "SoaWithCloudMember" in format_undo(undone) and "cloud-only members" in format_undo(undone)
    soa.resync()
    assert groups_state(soa)["SoaParent"]["onPremisesSyncEnabled"] is True
    assert soa.stats()["hazards"] == []  # no cloud member was lost at takeover


def test_contacts_are_converted_and_marked_as_a_preview(soa: Any) -> None:
    """ENFORCE_OBJECTS=contacts converts the synced contacts only; the report says it is a preview feature."""
    report = sweep(apply=True, ENFORCE_OBJECTS="contacts")
    section = report["contacts"]
    assert section["preview"] is True and section["changed"] == 2
    assert sorted(converted(soa)) == SYNCED_CONTACTS
    assert "a preview" in format_report(report)


@pytest.mark.parametrize("knobs", [{"graph_batch_item_429_rate": 0.25}, {"graph_batch_item_503_after_write_rate": 0.5}])
def test_under_faults_the_same_set_converts_and_retry_after_is_honoured(soa: Any, knobs: dict[str, float]) -> None:
    """Throttled items wait their Retry-After, unclear writes are read back; the outcome matches a calm run."""
    soa.knobs(retry_after=0.2, **knobs)
    assert sweep(apply=False, ENFORCE_MAIL_ENABLED_GROUPS="true")["groups"]["candidates"] == 8
    assert soa.stats()["graphWrites"] == 0  # report mode under faults: reads only
    report = sweep(apply=True, ENFORCE_MAIL_ENABLED_GROUPS="true")["groups"]
    assert (report["changed"], report["failed"], report["unknown"]) == (8, 0, 0)
    order = converted(soa)
    assert len(order) == 8 and order.index("SoaChild") < order.index("SoaParent")
    if "graph_batch_item_503_after_write_rate" in knobs:
        # An unclear write is read back, and found applied: never sent a second time.
        assert soa.stats()["graphWrites"] == 8
    stats = soa.stats()
    assert stats["retryAfterViolations"] == [] and sum(stats["faults"].values()) > 0


def test_b32_a_child_that_fails_holds_its_parents_back_in_the_same_run(soa: Any) -> None:
    """A refused child ends failed; its parent and grandparent are held back, naming it, and the run exits 1."""
    soa.knobs(authority_refused=["SoaChild"])
    report = run_sweep(clients(), apply=True)
    section = report.to_json()["groups"]
    assert converted(soa) == ["SoaWithCloudMember"] and report.broken
    assert (section["changed"], section["failed"], section["notAttempted"]) == (1, 1, 2)  # the parents: never sent
    held = {item["displayName"]: item["reason"] for item in section["heldBackList"]}
    assert held["SoaParent"] == "its member group(s) did not end applied in this run: SoaChild (failed)"
    assert "SoaParent (held back)" in held["SoaGrandparent"]


def test_the_time_budget_stops_the_writes_and_says_so(soa: Any) -> None:
    """A budget spent on the reads leaves every candidate not attempted, the section incomplete, nothing written."""
    soa.knobs(latency=0.3)
    report = sweep(apply=True, ENFORCE_TIME_BUDGET_SECONDS="0.5")["groups"]
    assert (report["notAttempted"], report["changed"], report["complete"]) == (4, 0, False)
    assert any("time budget" in note for note in report["notes"]) and soa.stats()["graphWrites"] == 0


def test_b32_a_child_rolled_back_and_waiting_for_the_sync_holds_its_parent(soa: Any) -> None:
    """A member group rolled back to AD reads like a cloud-born one until the sync: its parent waits for it."""
    first = sweep(apply=True, ENFORCE_EXCLUDE="name:SoaParent,name:SoaGrandparent,name:SoaWithCloudMember")
    assert converted(soa) == ["SoaChild"]
    run_undo(clients(), first["runId"], apply=True)
    second = sweep(apply=True, ENFORCE_EXCLUDE="name:SoaWithCloudMember")["groups"]
    held = {item["displayName"]: item["reason"] for item in second["heldBackList"]}
    assert "its member group SoaChild was rolled back to AD and waits for the next sync cycle" in held["SoaParent"]
    assert second["changed"] == 0
    soa.resync()
    third = sweep(apply=True, ENFORCE_EXCLUDE="name:SoaWithCloudMember")["groups"]
    assert third["changed"] == 3 and converted(soa)[-3:] == ["SoaChild", "SoaParent", "SoaGrandparent"]


def test_undo_goes_parents_first_and_keeps_a_child_whose_parent_stays(soa: Any) -> None:
    """Undo sets groups back parents first; a group held by an excluded converted group stays, with the reason."""
    run = sweep(apply=True)
    undone = run_undo(clients(), run["runId"], apply=True).to_json()["groups"]
    back = [entry["name"] for entry in soa.authority_log() if not entry["isCloudManaged"]]
    assert back == ["SoaGrandparent", "SoaParent", "SoaChild"] and undone["changed"] == 3
    again = sweep(apply=True)  # nothing is converted again before the sync takes the groups back
    assert again["groups"]["changed"] == 0
    soa.resync()
    rerun = sweep(apply=True)
    partial = run_undo(clients(ENFORCE_EXCLUDE="name:SoaParent"), rerun["runId"], apply=True).to_json()["groups"]
    held = {item["displayName"]: item["reason"] for item in partial["heldBackList"]}
    assert held == {"SoaChild": "the group holding it stays cloud-managed: SoaParent"}
    assert partial["changed"] == 1 and partial["excluded"] == 1  # SoaGrandparent only


def test_undo_keeps_every_group_converted_when_one_of_the_run_cannot_be_read(soa: Any) -> None:
    """A group whose members cannot be read may hold others: undo sets no group back, names it, and exits 1."""
    run = sweep(apply=True)
    soa.knobs(members_unreadable=["SoaParent"])
    report = run_undo(clients(), run["runId"], apply=True)
    section = report.to_json()["groups"]
    assert section["changed"] == 0 and report.broken and soa.stats()["graphWrites"] == 4  # the run's own
    assert [f["identity"] for f in section["failures"]] == ["SoaParent"]
    held = {item["displayName"]: item["reason"] for item in section["heldBackList"]}
    assert set(held) == {"SoaChild", "SoaGrandparent"} and "could not be read (SoaParent)" in held["SoaChild"]


def test_a_failure_in_one_kind_is_exit_1_even_when_another_kind_braked() -> None:
    """Exit codes: a failed write or an unreadable kind wins over the brake of another kind."""
    from shared.authority.objects import CONTACTS, GROUPS
    from shared.authority.report import KindReport
    from shared.cli import _exit_code
    from shared.enforcement import Report

    braked = KindReport(GROUPS, "apply", 1, brake_engaged=True)
    failed = KindReport(CONTACTS, "apply", 1, failed=1)
    assert _exit_code(Report(mode="apply", kinds=[braked])) == 2
    assert _exit_code(Report(mode="apply", kinds=[braked, failed])) == 1
    assert _exit_code(Report(mode="apply", kinds=[KindReport(GROUPS, "apply", 1, error="denied")])) == 1


def test_a_write_that_reads_back_late_is_confirmed_after_waiting(soa: Any) -> None:
    """Graph replicas lag: a 204 whose read-back still shows false is read again until it shows true."""
    soa.knobs(authority_read_lag=1.0)
    report = sweep(apply=True, ENFORCE_EXCLUDE="name:SoaChild")["groups"]
    assert (report["changed"], report["unknown"]) == (1, 0)


def test_requests_are_pages_plus_batches_plus_writes(soa: Any) -> None:
    """Listing pages, two $batches of reads per 20 groups (plus one for member groups no longer synced), and per
    level one $batch to write and one to read back."""
    before = soa.stats()["requestsTotal"]
    report = sweep(apply=True)["groups"]
    reads = math.ceil(2 * report["scanned"] / 20) + 1  # + GroupUSNoMail's state: converted, nested in a synced group
    writes = 3 * 2  # three levels of at most 20: one PATCH $batch and one read-back $batch each
    assert report["requests"] == 1 + reads + writes
    assert soa.stats()["requestsTotal"] - before == report["requests"]  # and nothing to Exchange


def test_a_missing_role_fails_the_kind_with_the_role_to_grant(soa: Any) -> None:
    """Without Group-OnPremisesSyncBehavior.ReadWrite.All the section names the role, and the run exits 1."""
    roles = soa.knobs()["roles"]
    graph = next(resource for resource in roles if "graph" in resource)
    soa.knobs(roles={**roles, graph: [r for r in roles[graph] if not r.startswith("Group-OnPremises")]})
    report = run_sweep(clients(), apply=True)
    section = report.to_json()["groups"]
    assert report.broken and section["changed"] == 0 and soa.stats()["graphWrites"] == 0
    assert "Group-OnPremisesSyncBehavior.ReadWrite.All" in section["error"]
    assert "could not be read" in format_report(report.to_json())


def test_a_crashed_runs_group_conversions_are_settled_by_reading_their_state(soa: Any) -> None:
    """Pending group intents of a dead run are read back in a $batch: the converted one applied, the other unknown."""
    import subprocess
    import sys

    from shared import journal as journal_module
    from shared.directory import GraphCall

    book = clients().journal()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    session = book.run_session("20261129T000000Z-dead01", "sweep")
    session.meta["pid"] = dead.stdout.strip()  # a process that has exited: its session is an orphan
    ids = {g["name"]: g["id"] for g in soa.directory_state()["groups"]}
    session.intend([session.entry("group.isCloudManaged", ids[n], n, False, True) for n in ("SoaChild", "SoaParent")])
    journal_module._LIVE.discard(session.name)
    # The dead run's first write went through before it died; its second never left (or a replica lags: unknown).
    url = f"/groups/{ids['SoaChild']}/onPremisesSyncBehavior"
    role = "Group-OnPremisesSyncBehavior.ReadWrite.All"
    clients().directory().batch([GraphCall("child", url, role, method="PATCH", body={"isCloudManaged": True})])
    report = sweep(apply=False)
    assert any(
        "settled 2 journal entries left by 1 interrupted run(s) (1 applied, 1 unknown)" in n for n in report["notes"]
    )
    settled = {e.target: (e.outcome, e.settled_by) for e in book.run_entries("20261129T000000Z-dead01")}
    assert settled == {"SoaChild": ("applied", report["runId"]), "SoaParent": ("unknown", report["runId"])}
