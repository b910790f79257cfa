"""Safety that cannot silently miss, settings and inputs that never crash, and the paper cuts of the CLI."""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.cli import format_report
from shared.doctor import run_doctor
from shared.errors import ConfigurationError
from shared.messages import parse_request
from shared.queues import RESULTS, Storage, environment_settings, storage_endpoint
from shared.runs import run_sweep as journaled_sweep
from shared.settings import Settings
from shared.wiring import Clients
from shared.worker import Worker
from tests.chain_helpers import collect_results, exoprov, fresh_clients, run_worker, submit, unreachable_storage
from tests.conftest import ROOT


def run_sweep(*, apply: bool):
    settings = Settings.from_env()
    return journaled_sweep(Clients.from_settings(settings), apply=apply)


# -- 10. exclusions ------------------------------------------------------------------------------------------


def test_an_exclusion_matches_any_smtp_address_of_the_mailbox(env, sandbox, monkeypatch) -> None:
    """A secondary proxy address (or SMTP:-prefixed, ;-separated) protects its mailbox like its UPN does."""
    monkeypatch.setenv("ENFORCE_EXCLUDE", "SMTP:UserExcluded@contoso.onmicrosoft.com;info@contoso.com")
    report = run_sweep(apply=True)
    assert (report.excluded, report.changed) == (2, 4)  # vip@ by its secondary address, info@ by its primary
    assert "UserExcluded@contoso.com" not in {c["userPrincipalName"] for c in report.candidate_list}
    assert report.unmatched_exclusions == []
    assert {m["upn"]: m["cloudManaged"] for m in sandbox.mailboxes()}["UserExcluded@contoso.com"] is False


def test_exclusions_that_match_nothing_are_named_by_the_report_and_the_doctor(env, sandbox, monkeypatch) -> None:
    """An entry naming no mailbox is listed in the report and fails the doctor, with how to fix it."""
    monkeypatch.setenv("ENFORCE_EXCLUDE", "vip@contoso.com,ghost@contoso.com")
    report = run_sweep(apply=False)
    assert report.unmatched_exclusions == ["ghost@contoso.com"]
    assert any("ghost@contoso.com" in note for note in report.notes)
    out = io.StringIO()
    assert run_doctor(out) == 1
    assert "FAIL  exclusions" in out.getvalue() and "ghost@contoso.com" in out.getvalue()


@pytest.mark.parametrize("entry", ["*@contoso.com", "vip*", "RecipientTypeDetails -eq 'UserMailbox'", "vip"])
def test_an_exclusion_that_is_no_upn_address_or_guid_is_refused_at_start(entry: str) -> None:
    """Wildcards, filters and bare names would match nothing: refused, naming the accepted forms."""
    with pytest.raises(ConfigurationError, match="ENFORCE_EXCLUDE.*accepted forms"):
        Settings.from_env({"ENFORCE_EXCLUDE": f"ceo@contoso.com,{entry}"})


# -- 11. report mode names its candidates --------------------------------------------------------------------


def test_report_mode_names_its_candidates_in_the_table_and_the_json(env, sandbox) -> None:
    """The table lists the candidates the JSON carries, so that 'the ones you expect' can be checked."""
    report = run_sweep(apply=False).to_json()
    upns = sorted(c["userPrincipalName"] for c in report["candidateList"])
    assert len(upns) == 6 and "UserNoMailWithEXO@contoso.com" in upns
    table = format_report(report)
    assert "candidates:" in table and all(upn in table for upn in upns)


def test_a_large_report_shows_the_first_candidates_and_says_how_to_get_all(env, sandbox, tmp_path: Path) -> None:
    """Three hundred candidates: the table shows twenty and names --json and --csv; the CSV holds them all."""
    sandbox.reset({"generate": {"mailboxes": 1000, "candidates": 300}})
    target = tmp_path / "candidates.csv"
    run = exoprov("sweep", "--report", "--csv", str(target), env={"ENFORCE_MAX_CHANGES": "0"})
    assert run.returncode == 0, run.stderr
    assert "(the first 20 of 300; all: --json or --csv FILE)" in run.stdout
    with target.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 300 and set(rows[0]) == {"identity", "userPrincipalName", "recipientTypeDetails"}


# -- 12. Ctrl-C -----------------------------------------------------------------------------------------------


def test_ctrl_c_during_apply_finishes_what_is_in_flight_and_reports_with_exit_130(env, sandbox) -> None:
    """SIGINT mid-apply: no new writes, the report says what was changed (as the tenant does), exit 130."""
    sandbox.reset({"generate": {"mailboxes": 3000, "candidates": 400}}, latency=0.05)
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "sweep", "--apply", "--json"],
        cwd=ROOT,
        env={**os.environ, "ENFORCE_MAX_CHANGES": "0", "ENFORCE_CONCURRENCY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "Set-Mailbox" not in sandbox.stats()["commands"] and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    report = json.loads(stdout)
    flipped = 400 - sum(1 for m in sandbox.mailboxes() if m["dirSynced"] and not m["cloudManaged"])
    assert report["interrupted"] is True and 0 < report["changed"] == flipped < 400
    assert report["notAttempted"] == 400 - report["changed"] and "Traceback" not in stderr


# -- 13. settings and arguments that used to crash later ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("HTTP_READ_TIMEOUT_SECONDS", "0", "from 0.1 to 3600"),
        ("HTTP_CONNECT_TIMEOUT_SECONDS", "1e300", "plain digits"),
        ("ENFORCE_TIME_BUDGET_SECONDS", "1e300", "plain digits"),
        ("ENFORCE_SCHEDULE", "99 99 99 * * *", "outside"),
        ("ENFORCE_SCHEDULE", "0 0 */0 * * *", "step"),
        ("ENFORCE_SCHEDULE", "0 5-1 * * * *", "backwards"),
        ("ENFORCE_SCHEDULE", "0 0 0 L * *", "not valid"),
        ("ENFORCE_SCHEDULE", "0 0 0 31 2 *", "never fires"),
        ("ENFORCE_MAX_CHANGES", "1_000", "plain digits"),
        ("ENFORCE_MAX_CHANGES", "\u0661\u0662", "plain digits"),
        ("POLL_MIN_SECONDS", "\uff11\uff12", "plain digits"),
        ("AzureWebJobsStorage", "AccountName=x", "neither AccountKey"),
        ("AzureWebJobsStorage", "AccountName=x;AccountKey=not base64!", "not base64"),
        ("AzureWebJobsStorage__credential", "password", "managedidentity"),
        ("AzureWebJobsStorage__queueServiceUri", "http://storage.example.net/", "https"),
    ],
)
def test_a_value_that_would_crash_later_is_refused_at_start(name: str, value: str, says: str) -> None:
    """Each is refused when the settings are read, naming the setting and the accepted form."""
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value).startswith(name) and says in str(refused.value)


def test_the_development_storage_shorthand_is_accepted_in_any_case() -> None:
    """UseDevelopmentStorage=true is matched case-insensitively, as the Functions host does."""
    assert Settings.from_env({"AzureWebJobsStorage": "usedevelopmentstorage=TRUE"}).storage == (
        "UseDevelopmentStorage=true"
    )


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("submit", "--file", "/no/such/request.json"), 1, "cannot read /no/such/request.json"),
        (("results", "--wait", "nan"), 2, "finite number of seconds"),
        (("worker", "--timeout", "-5"), 2, "finite number of seconds"),
    ],
)
def test_bad_arguments_get_one_line_and_an_exit_code(args: tuple[str, ...], code: int, says: str) -> None:
    """A missing file or an impossible number is one line on stderr, never a traceback."""
    run = exoprov(*args, env={"AzureWebJobsStorage": "UseDevelopmentStorage=true", "ALLOWED_LICENSES": "X"})
    assert run.returncode == code and says in run.stderr and "Traceback" not in run.stderr


# -- 14. unreachable storage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("submit", "--upn", "a@contoso.com"), ("results",), ("worker", "--timeout", "5")])
def test_unreachable_storage_fails_within_seconds_naming_the_endpoint(args: tuple[str, ...]) -> None:
    """Storage that does not answer: one line naming the endpoint within seconds, not 80 s and a traceback."""
    connection, port = unreachable_storage()
    started = time.monotonic()
    run = exoprov(
        *args,
        env={
            "AzureWebJobsStorage": connection,
            "ALLOWED_LICENSES": "EXCHANGESTANDARD",
            "DEFAULT_LICENSE": "EXCHANGESTANDARD",
        },
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert run.returncode in (1, 3) and f"127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr and "a2V5" not in run.stderr


def test_a_proxy_named_by_the_system_carries_the_storage_calls(chain_env, monkeypatch) -> None:
    """HTTP_PROXY set: the storage calls go through that proxy, as requests would send them."""
    seen: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (the name http.server calls)
            seen.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        with pytest.raises(ResourceNotFoundError):
            Storage(Settings.from_env()).pending((RESULTS,))
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert seen and seen[0].startswith(f"{storage_endpoint(Settings.from_env())}/{RESULTS}")


def test_without_a_proxy_the_ca_bundle_requests_would_read_is_handed_over_once(monkeypatch) -> None:
    """No proxy (NO_PROXY alone names none): the storage clients stop reading the environment per call and get
    the CA bundle it names."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")  # names no proxy
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/corporate.pem")
    assert environment_settings() == {"use_env_settings": False, "connection_verify": "/etc/ssl/corporate.pem"}
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/requests.pem")
    assert environment_settings()["connection_verify"] == "/etc/ssl/requests.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE")
    assert environment_settings() == {"use_env_settings": False}
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.contoso.com:8080")
    assert environment_settings() == {"use_env_settings": True}


# -- 15. byte-order mark ----------------------------------------------------------------------------------------


def test_a_request_with_a_byte_order_mark_is_accepted(chain_env, sandbox) -> None:
    """PowerShell and .NET write a UTF-8 BOM in front of the JSON: the request is accepted all the same."""
    body = "\ufeff" + json.dumps({"requestId": "bom", "userPrincipalName": "bom@contoso.com"})
    assert parse_request(body.encode("utf-8"), Settings.from_env()).request_id == "bom"
    sandbox.add_user(upn="bom@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, body)
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)["bom"]
    assert result["status"] == "succeeded"


# -- 16. secrets in settings ---------------------------------------------------------------------------------------


def test_a_password_in_an_endpoint_url_is_never_echoed() -> None:
    """A URL with user:password@ is refused, and the refusal does not repeat the password."""
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"EXCHANGE_ENDPOINT": "https://admin:hunter2@outlook.office365.com"})
    assert "hunter2" not in str(refused.value) and "password" in str(refused.value)


def test_a_storage_key_is_never_echoed() -> None:
    """A malformed connection string is refused without showing its key."""
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"AzureWebJobsStorage": "AccountName=x;AccountKey=s3cr3t!!;Bogus"})
    assert "s3cr3t" not in str(refused.value)


# -- paper cuts ------------------------------------------------------------------------------------------------------


def test_version_help_and_verbose_after_the_subcommand() -> None:
    """--version answers; each command's help names its exit codes and settings; -v may follow the command."""
    assert exoprov("--version").stdout.startswith("exoprov ")
    helped = exoprov("sweep", "--help").stdout
    assert "exit codes: 0 nothing failed" in helped and "settings read:" in helped
    assert exoprov(
        "results", "-v", "--wait", "0", env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    ).returncode in (0, 1)


def test_an_idle_worker_does_not_repeat_its_progress_line(chain_env) -> None:
    """Idle for three seconds with progress due every 0.1 s: the same line is said once, not thirty times."""
    clients = fresh_clients()
    said: list[tuple[int, int]] = []
    worker = Worker(
        clients.storage(), clients.dispatcher(), progress=lambda *counts: said.append(counts), progress_every=0.1
    )
    assert worker.run(timeout=3) == 3
    assert said == [(0, 0)]
