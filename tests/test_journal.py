"""The change journal: one settled entry per write, `exoprov journal`, `exoprov undo`, and settling after a crash."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sandbox.azurite import Azurite
from shared.cli import main
from shared.errors import JournalUnavailableError
from shared.journal import Journal
from shared.recovery import CLOUD_MANAGED, settle_runs
from shared.runs import run_sweep, run_undo
from shared.settings import Settings
from shared.wiring import Clients
from tests.chain_helpers import exoprov, fresh_clients
from tests.conftest import ROOT

# Faults that leave the tenant's view unclear: a write applied but answered with an empty error, read-backs
# that fail, answers lost after the work was done, whole-batch 503s and per-item throttling.
FAULTS = {
    "fault_empty_error_rate": 0.05,
    "fault_readback_rate": 0.2,
    "fault_503_rate": 0.05,
    "fault_item_429_rate": 0.05,
    "fault_504_rate": 0.03,
    "retry_after": 0.2,  # throttled items still wait what they are told; told less, the run takes seconds, not 30
}


def journal() -> Journal:
    return fresh_clients().journal()


def cloud_managed(sandbox) -> dict[str, bool]:
    """The tenant's truth: each mailbox's id and whether it is cloud-managed."""
    return {m["id"]: m["cloudManaged"] for m in sandbox.mailboxes()}


def without_blobs(connection: str) -> str:
    """The same connection string with its blob endpoint on a loopback port nobody listens on."""
    return re.sub(r"BlobEndpoint=[^;]*", "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1", connection)


def test_each_flip_of_a_sweep_is_one_applied_entry_under_the_reports_run_id(env, sandbox) -> None:
    """A sweep's report carries its runId, and the journal holds one applied entry per mailbox it flipped."""
    before = cloud_managed(sandbox)
    report = run_sweep(fresh_clients(), apply=True)
    entries = journal().run_entries(report.run_id)
    flipped = {i for i, managed in cloud_managed(sandbox).items() if managed and not before[i]}
    assert len(entries) == report.changed == 6
    assert {e.target_id for e in entries} == flipped
    assert all(
        e.action == CLOUD_MANAGED and (e.before, e.after, e.outcome) == (False, True, "applied") for e in entries
    )
    assert all(e.run_id == report.run_id == e.correlation_id and "@" in e.target for e in entries)


def test_a_report_only_sweep_writes_no_journal(env, sandbox) -> None:
    """Report mode changes nothing, so the journal has no run for it."""
    report = run_sweep(fresh_clients(), apply=False)
    assert report.run_id and journal().run_info(report.run_id) is None


def test_with_faults_the_journal_holds_one_settled_entry_per_mailbox_the_tenant_saw_written(
    env, sandbox, monkeypatch
) -> None:
    """3,000 mailboxes under faults: every mailbox the tenant saw a write for has one settled entry.

    An entry for a mailbox the tenant saw no write for is one whose outcome exoprov could not know (a 5xx on the
    write and on its read-back: `unknown`) or one the tenant refused at its door (throttled to the last attempt).
    """
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "0")
    sandbox.reset({"generate": {"mailboxes": 3000, "candidates": 600, "seed": 5}}, **FAULTS)
    before = cloud_managed(sandbox)
    report = run_sweep(fresh_clients(), apply=True)
    entries = journal().run_entries(report.run_id)
    seen = set(sandbox.stats()["writes"])
    assert len(entries) == len({e.target_id for e in entries})
    assert seen <= {e.target_id for e in entries}
    assert all(e.outcome in ("unknown", "failed") for e in entries if e.target_id not in seen)
    assert all(e.target_id in seen for e in entries if e.outcome in ("applied", "noop"))
    assert "pending" not in {e.outcome for e in entries}
    now = cloud_managed(sandbox)
    for entry in entries:
        if entry.outcome == "applied":
            assert now[entry.target_id] and not before[entry.target_id], entry
        if entry.outcome == "failed":
            assert not now[entry.target_id], entry
    outcomes = [e.outcome for e in entries]
    assert outcomes.count("applied") == report.changed > 500
    assert report.failed + report.unknown > 0 and sum(sandbox.stats()["faults"].values()) > 0
    assert outcomes.count("failed") == report.failed and outcomes.count("unknown") == report.unknown


def test_journal_run_json_lists_the_entries_as_json_lines(env, sandbox, capsys) -> None:
    """`exoprov journal --run ID --json` prints one JSON object per write, with the documented fields."""
    report = run_sweep(fresh_clients(), apply=True)
    assert main(["journal", "--run", report.run_id, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6
    fields = {"time", "runId", "requestId", "correlationId", "action", "targetId", "target", "before", "after"}
    assert all(fields | {"outcome"} <= set(line) and line["runId"] == report.run_id for line in lines)


def test_journal_without_options_shows_the_last_day_as_a_table(env, sandbox, capsys) -> None:
    """The table has a header, one line per write with its outcome, and a count."""
    report = run_sweep(fresh_clients(), apply=True)
    assert main(["journal"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["time", "(UTC)", "run", "or", "request", "action", "target", "change", "outcome"]
    rows = [line for line in out if report.run_id in line]
    assert len(rows) == 6 and all(re.search(r"  False -> True +applied$", row) for row in rows)
    assert out[-1] == "6 entries"


def test_journal_rejects_a_malformed_run_id(env, capsys) -> None:
    """A run id is checked before it becomes a blob name: exit 1 and the expected form."""
    assert main(["journal", "--run", "../ledger/x"]) == 1
    assert "20261129T205012Z-3fa2c1" in capsys.readouterr().err


def test_the_chain_journals_each_write_of_a_request(chain_env, replication_lag) -> None:
    """A shared mailbox: usageLocation, license add, both Set-Mailbox writes and the license removal are applied.

    A new user's first writes may be refused while Entra replicates it; those attempts are journaled as failed.
    """
    from tests.chain_helpers import collect_results, request, run_worker, submit

    replication_lag.add_user(upn="journal.shared@contoso.com")
    clients = fresh_clients()
    submit(clients, request("j-1", "journal.shared@contoso.com", mailboxType="Shared"))
    assert run_worker(clients) == 0
    assert collect_results(clients)["j-1"][0]["status"] == "succeeded"
    entries = clients.journal().request_entries("j-1")
    applied = [e for e in entries if e.outcome == "applied"]
    assert [e.action for e in applied] == [
        "usageLocation",
        "license.add",
        "Set-Mailbox -IsExchangeCloudManaged",
        "Set-Mailbox -Type",
        "license.remove",
    ]
    assert all(e.request_id == "j-1" and (e.outcome == "applied" or e.error) for e in entries)
    assert {e.outcome for e in entries} <= {"applied", "failed"}
    assert applied[3].before == "UserMailbox" and applied[3].after == "Shared"
    assert all(s.state == "closed" for s in clients.journal().sessions("requests/j-1.journal/"))


def test_if_the_journal_cannot_be_written_no_mailbox_is_changed(env, sandbox, monkeypatch, capsys) -> None:
    """Storage unreachable: `sweep --apply` exits 1 naming the journal, and the tenant saw no write."""
    monkeypatch.setenv("AzureWebJobsStorage", without_blobs(env["AzureWebJobsStorage"]))
    assert main(["sweep", "--apply"]) == 1
    assert "journal" in capsys.readouterr().err
    assert sandbox.stats()["writes"] == {}


def test_a_journal_lost_mid_run_stops_the_writes_at_the_next_group(env, sandbox, tmp_path, monkeypatch) -> None:
    """The storage account goes away after the first writes: no write is made without its intent, exit code 1."""
    from shared.cli import _exit_code

    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "0")
    private = Azurite.on_free_ports(tmp_path / "azurite")
    private.start()
    try:
        monkeypatch.setenv("AzureWebJobsStorage", private.connection_string)
        sandbox.reset({"generate": {"mailboxes": 3000, "candidates": 1500, "seed": 8}})
        clients = fresh_clients()
        clients.storage().ensure()
        stopped: list[int] = []

        def stop_storage(done: int, total: int) -> None:
            if not stopped:
                stopped.append(done)
                private.stop()

        report = run_sweep(clients, apply=True, progress=stop_storage)
    finally:
        private.stop()
    assert report.journal_error and "journal" in report.journal_error
    assert _exit_code(report) == 1 and not report.complete
    assert 0 < report.changed <= 500  # the first group's intents were written; the second group's could not be
    assert len(sandbox.stats()["writes"]) == report.changed + report.failed + report.unknown


# -- undo ---------------------------------------------------------------------------------------------------------


def test_undo_without_apply_reports_and_changes_nothing(env, sandbox) -> None:
    """`undo` alone plans the run's six flips back and the tenant is left as it is."""
    run = run_sweep(fresh_clients(), apply=True)
    after_sweep = cloud_managed(sandbox)
    report = run_undo(fresh_clients(), run.run_id, apply=False)
    assert (report.undoes, report.scanned, report.candidates, report.changed) == (run.run_id, 6, 6, 0)
    assert cloud_managed(sandbox) == after_sweep
    assert journal().run_info(report.run_id) is None


def test_undo_apply_sets_back_exactly_what_the_run_flipped_minus_changes_since_and_exclusions(
    env, sandbox, monkeypatch
) -> None:
    """One mailbox changed since and one excluded since are left alone; the other four go back to on-premises."""
    before = cloud_managed(sandbox)
    run = run_sweep(fresh_clients(), apply=True)
    flipped = [e for e in journal().run_entries(run.run_id)]
    changed_since, excluded = flipped[0], flipped[1]
    clients = fresh_clients()
    from shared.exchange import Command

    clients.exchange().invoke(
        Command("Set-Mailbox", {"Identity": changed_since.target_id, "IsExchangeCloudManaged": False})
    )
    monkeypatch.setenv("ENFORCE_EXCLUDE", excluded.target)
    report = run_undo(fresh_clients(), run.run_id, apply=True)
    assert (report.candidates, report.changed, report.excluded, len(report.changed_since)) == (4, 4, 1, 1)
    now = cloud_managed(sandbox)
    assert now[excluded.target_id] is True and now[changed_since.target_id] is False
    assert {i for i, m in now.items() if m != before[i]} == {excluded.target_id}
    undone = journal().run_entries(report.run_id)
    assert len(undone) == 4 and all((e.before, e.after, e.outcome) == (True, False, "applied") for e in undone)
    info = journal().run_info(report.run_id)
    assert info is not None and info["undoes"] == run.run_id


def test_an_undo_can_be_undone(env, sandbox) -> None:
    """Undoing the undo run flips the same mailboxes to cloud-managed again."""
    run = run_sweep(fresh_clients(), apply=True)
    after_sweep = cloud_managed(sandbox)
    undo = run_undo(fresh_clients(), run.run_id, apply=True)
    assert undo.changed == 6
    redo = run_undo(fresh_clients(), undo.run_id, apply=True)
    assert redo.changed == 6 and cloud_managed(sandbox) == after_sweep


def test_undo_honours_the_brake_with_exit_2(env, sandbox, monkeypatch) -> None:
    """More mailboxes to set back than ENFORCE_MAX_CHANGES: exit 2 and nothing changes."""
    run = run_sweep(fresh_clients(), apply=True)
    after_sweep = cloud_managed(sandbox)
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "3")
    result = exoprov("undo", "--run", run.run_id, "--apply", "--json")
    assert result.returncode == 2, result.stderr
    assert json.loads(result.stdout)["brakeEngaged"] is True
    assert cloud_managed(sandbox) == after_sweep


def test_undo_of_a_run_the_journal_does_not_know_exits_1(env, sandbox) -> None:
    """An unknown run id is an error a person can act on, not an empty success."""
    result = exoprov("undo", "--run", "20200101T000000Z-abcdef")
    assert result.returncode == 1
    assert "the journal has no run 20200101T000000Z-abcdef" in result.stderr


def test_undo_under_faults_reverts_the_runs_flips(env, sandbox) -> None:
    """2,000 mailboxes, faults on for the sweep and the undo: afterwards every mailbox the run flipped reads false."""
    sandbox.reset({"generate": {"mailboxes": 2000, "candidates": 300, "seed": 9}}, **FAULTS)
    before = cloud_managed(sandbox)
    run = run_sweep(fresh_clients(), apply=True)
    applied = {e.target_id for e in journal().run_entries(run.run_id) if e.outcome == "applied"}
    undo = run_undo(fresh_clients(), run.run_id, apply=True)
    assert undo.candidates == len(applied)
    undone = {e.target_id for e in journal().run_entries(undo.run_id) if e.outcome == "applied"}
    assert undone <= applied and len(undone) == undo.changed
    now = cloud_managed(sandbox)
    assert all(now[i] is False for i in undone)
    touched = {e.target_id for e in journal().run_entries(run.run_id)}
    assert all(now[i] is before[i] for i in now if i not in touched)
    assert undo.changed + undo.failed + undo.unknown + undo.not_attempted == undo.candidates


# -- crashes ------------------------------------------------------------------------------------------------------


def test_a_sweep_killed_mid_run_leaves_intents_that_the_next_run_settles(env, sandbox) -> None:
    """SIGKILL during the writes: the run's blob stays open with pending intents; the next run reads them back."""
    sandbox.reset({"generate": {"mailboxes": 4000, "candidates": 2000, "seed": 3}}, latency=0.02)
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "sweep", "--apply"],
        cwd=ROOT,
        env={**os.environ, "ENFORCE_CONCURRENCY": "2", "ENFORCE_MAX_CHANGES": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(sandbox.stats()["writes"]) < 100:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    book = journal()
    (crashed,) = book.sessions("runs/")
    assert crashed.state == "open"
    pending = [e for e in book.read_session(crashed.name) if e.outcome == "pending"]
    assert pending, "the kill came after the run's last outcome was written"
    clients = fresh_clients()
    settlement = settle_runs(book, clients.exchange, clients.graph, by="test")
    now = cloud_managed(sandbox)
    settled = {e.entry_id: e for e in book.read_session(crashed.name)}
    assert settlement.sessions == 1 and settlement.settled == len(pending)
    for entry in pending:
        outcome = settled[entry.entry_id].outcome
        assert outcome == ("applied" if now[entry.target_id] else "failed"), entry
        assert settled[entry.entry_id].settled_by == "test"
    assert book.sessions("runs/")[0].state == "closed"
    assert {e.target_id for e in settled.values()} >= set(sandbox.stats()["writes"])


def test_the_next_sweep_settles_a_crashed_run_and_says_so(env, sandbox) -> None:
    """An open run whose process is gone is settled before the next sweep plans, with a note in its report."""
    sandbox.reset({"generate": {"mailboxes": 300, "candidates": 40, "seed": 4}})
    book = journal()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    session = book.run_session("20261129T000000Z-dead00", "sweep")
    session.meta["pid"] = dead.stdout.strip()  # a process that has exited: its session is an orphan
    targets = [m for m in sandbox.mailboxes() if m["dirSynced"] and not m["cloudManaged"]][:3]
    session.intend([session.entry(CLOUD_MANAGED, m["id"], m["upn"], False, True) for m in targets])
    from shared import journal as journal_module

    journal_module._LIVE.discard(session.name)
    report = run_sweep(fresh_clients(), apply=True)
    assert any("settled 3 journal entries left by 1 interrupted run(s) (3 failed)" in n for n in report.notes)
    assert {e.outcome for e in book.run_entries("20261129T000000Z-dead00")} == {"failed"}


INTENT = json.dumps({"op": "intents", "time": "t", "action": CLOUD_MANAGED, "targets": [["a", "x", "x"]]})


@pytest.mark.parametrize("outcome", ["applied", "failed", "unknown", "noop"])
def test_a_late_outcome_line_wins_over_a_settlement(outcome: str) -> None:
    """The last line about an entry is its outcome, so a live run's own answer corrects an early settlement."""
    from shared.journal import fold

    lines = [
        INTENT,
        json.dumps({"op": "outcome", "id": "a", "outcome": "failed", "by": "settler"}),
        json.dumps({"op": "outcome", "id": "a", "outcome": outcome}),
    ]
    (entry,) = fold(lines)
    assert (entry.outcome, entry.settled_by) == (outcome, None)


def test_a_withdrawn_intent_leaves_the_journal_view() -> None:
    """An intent whose write was never sent (the run stopped first) is not an entry."""
    from shared.journal import fold

    lines = [
        INTENT,
        json.dumps({"op": "withdraw", "ids": ["a"]}),
    ]
    assert fold(lines) == []


def test_journal_errors_name_the_container_and_the_endpoint(env, monkeypatch) -> None:
    """A journal that cannot be reached says which container at which account could not do what."""
    monkeypatch.setenv("AzureWebJobsStorage", without_blobs(env["AzureWebJobsStorage"]))
    with pytest.raises(JournalUnavailableError, match="exoprov-journal"):
        Clients.from_settings(Settings.from_env()).journal().sessions("runs/")


def test_a_run_that_fails_between_writes_and_outcomes_stays_open_for_the_next_run(env, sandbox) -> None:
    """An unexpected error mid-run leaves the run open with its unsettled intents; the next run settles them."""

    def broken_progress(done: int, total: int) -> None:
        raise RuntimeError("a bug in a progress callback")

    with pytest.raises(RuntimeError, match="a bug"):
        run_sweep(fresh_clients(), apply=True, progress=broken_progress)
    book = journal()
    (failed,) = book.sessions("runs/")
    assert failed.state == "open"
    assert "pending" in {e.outcome for e in book.read_session(failed.name)}
    report = run_sweep(fresh_clients(), apply=True)
    assert any("interrupted run(s)" in note for note in report.notes)
    assert "pending" not in {e.outcome for e in book.read_session(failed.name)}
    assert {s.state for s in book.sessions("runs/")} == {"closed"}


def test_when_the_first_append_fails_after_the_listing_no_mailbox_is_written(env, sandbox, monkeypatch) -> None:
    """The journal answers the settling pass, then refuses the run's first intents: the tenant sees no write."""

    def refuse(self: Journal, name: str, lines: list[dict[str, object]]) -> None:
        raise JournalUnavailableError(f"the journal could not append to {name}: refused by the test")

    monkeypatch.setattr(Journal, "append", refuse)
    report = run_sweep(fresh_clients(), apply=True)
    assert report.candidates == 6 and report.changed == 0 and report.not_attempted == 6
    assert report.journal_error and "refused by the test" in report.journal_error
    assert sandbox.stats()["writes"] == {}


def test_sweep_apply_without_storage_says_the_journal_needs_it(env, monkeypatch, capsys) -> None:
    """No AzureWebJobsStorage: `sweep --apply` exits 1 and says why a run that writes needs storage."""
    monkeypatch.delenv("AzureWebJobsStorage")
    assert main(["sweep", "--apply"]) == 1
    assert "records every write in the journal first" in capsys.readouterr().err
    assert main(["sweep", "--report"]) == 0  # a report needs no journal


def test_an_entry_whose_read_back_fails_for_now_waits_for_the_next_run(env, sandbox) -> None:
    """Settling while every read-back answers 503: nothing is settled, the run stays open, and a later pass ends it."""
    book = journal()
    session = book.run_session("20261129T000000Z-aaaaaa", "undo", undoes="20261128T000000Z-bbbbbb")
    target = next(m for m in sandbox.mailboxes() if m["dirSynced"] and not m["cloudManaged"])
    session.intend([session.entry(CLOUD_MANAGED, target["id"], target["upn"], False, True)])
    from shared import journal as journal_module

    journal_module._LIVE.discard(session.name)  # as if its process had died
    clients = fresh_clients()
    sandbox.knobs(fault_readback_rate=1.0)
    first = settle_runs(book, clients.exchange, clients.graph, by="first")
    assert (first.sessions, first.retry_later) == (0, 1) and "wait for the next run" in (first.note() or "")
    assert book.sessions("runs/")[0].state == "open"
    sandbox.knobs(fault_readback_rate=0.0)
    second = settle_runs(book, clients.exchange, clients.graph, by="second")
    assert (second.sessions, second.entries) == (1, {"failed": 1})
    (info,) = book.sessions("runs/")
    assert info.state == "closed" and info.metadata["undoes"] == "20261128T000000Z-bbbbbb"


def test_a_live_run_keeps_its_session_fresh_with_heartbeats(env) -> None:
    """A run that writes nothing for a while still appends a sign of life, which a reader ignores."""
    book = journal()
    session = book.run_session("20261129T000000Z-cccccc", "sweep")
    entry = session.entry(CLOUD_MANAGED, "id-1", "one@contoso.com", False, True)
    session.intend([entry])
    session.keep_alive(every=0.2)
    time.sleep(1.0)
    session.record(entry.entry_id, "applied")
    session.close()
    raw = book.container.get_blob_client(session.name).download_blob().readall().decode()
    assert '"op":"alive"' in raw
    assert [(e.target, e.outcome) for e in book.read_session(session.name)] == [("one@contoso.com", "applied")]
    assert book.sessions("runs/")[0].state == "closed"


def test_a_damaged_line_is_skipped_not_fatal() -> None:
    """Lines that are not journal lines (not JSON, not an object, no outcome) are skipped with a warning."""
    from shared.journal import fold

    lines = [
        INTENT,
        "{not json",
        "[1, 2]",
        json.dumps({"op": "outcome", "id": "a"}),
        json.dumps({"op": "outcome", "id": "a", "outcome": "applied"}),
    ]
    (entry,) = fold(lines)
    assert entry.outcome == "applied"


def test_an_undo_warns_that_the_next_apply_sweep_flips_the_mailboxes_again(env, sandbox) -> None:
    """Undone mailboxes are candidates again: the report says so, and names what prevents it."""
    run = run_sweep(fresh_clients(), apply=True)
    undo = run_undo(fresh_clients(), run.run_id, apply=True)
    assert any("flips these mailboxes again unless they are in ENFORCE_EXCLUDE" in n for n in undo.notes)
