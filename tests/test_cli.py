"""The `exoprov` command as a person runs it: output, exit codes and actionable failures."""

from __future__ import annotations

import json

import pytest

from shared.cli import main

CONTRACT_FIELDS = {
    "mode",
    "scanned",
    "dirSynced",
    "alreadyCloudManaged",
    "candidates",
    "changed",
    "excluded",
    "failed",
    "brakeEngaged",
    "tenantDefaultCloudManaged",
    "durationSeconds",
    "failures",
}


def test_sweep_json_has_every_contract_field(env, capsys) -> None:
    """`exoprov sweep --json` prints the report with at least the fields of README "The sweep report", exit 0."""
    assert main(["sweep", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= CONTRACT_FIELDS
    assert report["mode"] == "report" and report["changed"] == 0


def test_sweep_prints_a_readable_table_by_default(env, capsys) -> None:
    """Without --json the report is a table a person can read."""
    assert main(["sweep"]) == 0
    out = capsys.readouterr().out
    assert "exoprov sweep (report mode)" in out and "candidates              6" in out


def test_apply_flag_changes_mailboxes_and_report_flag_wins_over_enforce_mode(env, sandbox, monkeypatch, capsys) -> None:
    """--apply changes; ENFORCE_MODE=apply applies when no flag is given; --report always only reports."""
    monkeypatch.setenv("ENFORCE_MODE", "apply")
    assert main(["sweep", "--report", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == 0
    assert main(["sweep", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == 6


def test_the_brake_exits_2(env, monkeypatch, capsys) -> None:
    """When the brake engages, the exit code is 2 and the table says so."""
    monkeypatch.setenv("ENFORCE_MAX_CHANGES", "1")
    assert main(["sweep", "--apply"]) == 2
    assert "brake engaged           YES (limit 1)" in capsys.readouterr().out


def test_failed_mailboxes_exit_1_and_are_listed(env, sandbox, capsys) -> None:
    """A mailbox that could not be changed makes the exit code 1 and appears under failures."""
    sandbox.knobs(fault_item_429_rate=1.0, retry_after=0.01)
    assert main(["sweep", "--apply", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 6 and report["failures"][0]["identity"].endswith("@contoso.com")


def test_a_bad_setting_exits_1_and_names_it(env, monkeypatch, capsys) -> None:
    """A configuration error is one line naming the setting, exit 1, no traceback."""
    monkeypatch.setenv("ENFORCE_MODE", "yes-please")
    assert main(["sweep"]) == 1
    err = capsys.readouterr().err
    assert "ENFORCE_MODE" in err and "Traceback" not in err


def test_doctor_passes_against_the_sandbox(env, capsys, monkeypatch) -> None:
    """Every check passes against the sandbox; storage is skipped while AzureWebJobsStorage is unset."""
    monkeypatch.delenv("AzureWebJobsStorage")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.count("  ok  ") == 7 and "skip  storage" in out and "all checks passed" in out


def test_doctor_checks_everything_the_deployment_promised(chain_env, capsys) -> None:
    """With storage configured: Graph roles, licenses, Exchange write cmdlets, queues and the three containers pass."""
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    storage = "  ok  storage                 10 queues and the exoprov-ledger, exoprov-journal and exoprov-reports"
    assert storage + " containers answer" in out
    assert "EXCHANGESTANDARD 20 free" in out and "Set-Mailbox -IsExchangeCloudManaged and -Type are allowed" in out


def test_doctor_names_a_missing_graph_role_and_how_to_grant_it(env, sandbox, capsys) -> None:
    """A Graph token without LicenseAssignment.ReadWrite.All fails with the grant to run."""
    sandbox.knobs(
        roles={
            "https://outlook.office365.com": ["Exchange.ManageAsApp"],
            "https://graph.microsoft.com": ["User.Read.All", "LicenseAssignment.Read.All"],
        }
    )
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert (
        "FAIL  graph token             the Graph token lacks User.ReadUpdate.All, LicenseAssignment.ReadWrite.All"
        in out
    )
    assert "azd provision" in out


def test_doctor_notices_a_write_cmdlet_outside_the_exchange_role(env, sandbox, capsys) -> None:
    """If RBAC refuses Set-Mailbox, the probe fails with the role to assign (and changed nothing)."""
    sandbox.knobs(denied_cmdlets=["Set-Mailbox"])
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  exchange write cmdlets  Set-Mailbox -IsExchangeCloudManaged is not allowed" in out
    assert "Exchange Administrator" in out
    assert all(not m["cloudManaged"] for m in sandbox.mailboxes() if m["upn"].startswith("UserNoMail"))


def test_doctor_notices_an_allowed_license_the_tenant_does_not_have(env, monkeypatch, capsys) -> None:
    """ALLOWED_LICENSES naming a SKU the tenant lacks fails the Graph check with what to correct."""
    monkeypatch.setenv("ALLOWED_LICENSES", "EXCHANGESTANDARD,SPE_E5")
    assert main(["doctor"]) == 1
    assert "ALLOWED_LICENSES names SPE_E5" in capsys.readouterr().out


def test_doctor_notices_a_missing_queue(chain_env, capsys) -> None:
    """A queue that does not exist fails the storage check with the command that creates it."""
    from shared.queues import Storage
    from shared.settings import Settings

    Storage(Settings.from_env()).queue("provision-results").delete_queue()
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  storage" in out and "queue does not exist" in out and "azd provision" in out


def test_doctor_with_a_wrong_endpoint_says_what_to_fix(env, monkeypatch, capsys) -> None:
    """An unreachable EXCHANGE_ENDPOINT fails the Exchange check with the setting to fix."""
    monkeypatch.setenv("EXCHANGE_ENDPOINT", "http://127.0.0.1:9")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  exchange admin api" in out and "fix: check EXCHANGE_ENDPOINT (now http://127.0.0.1:9)" in out


def test_doctor_with_a_token_lacking_the_exchange_role_says_how_to_grant_it(env, sandbox, capsys) -> None:
    """A token without Exchange.ManageAsApp fails the role check with the command that grants it."""
    sandbox.knobs(roles={"https://outlook.office365.com": []})
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  exchange role" in out and "without Exchange.ManageAsApp" in out
    assert "New-MgServicePrincipalAppRoleAssignment" in out


def test_doctor_without_any_identity_explains_the_options(env, monkeypatch, capsys) -> None:
    """With no way to get a token, the token check says which identities are possible."""
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  exchange token" in out and "az login" in out


def test_the_sandbox_refuses_a_non_loopback_address(capsys) -> None:
    """`exoprov sandbox` listens on loopback only."""
    assert main(["sandbox", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_submit_worker_and_results_round_trip(chain_env, sandbox, capsys) -> None:
    """`exoprov submit`, then `worker --until-idle`, then `results`: the request's result comes out as one JSON line."""
    sandbox.add_user(upn="cli.user@contoso.com", usageLocation="DE")
    assert main(["submit", "--upn", "cli.user@contoso.com", "--type", "Shared", "--request-id", "cli-1"]) == 0
    assert capsys.readouterr().out.strip() == "cli-1"
    assert main(["worker", "--until-idle", "--timeout", "60", "--no-sweep"]) == 0
    capsys.readouterr()
    assert main(["results"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert (result["requestId"], result["status"], result["recipientTypeDetails"]) == (
        "cli-1",
        "succeeded",
        "SharedMailbox",
    )


def test_submit_refuses_an_invalid_request_before_queueing_it(chain_env, capsys) -> None:
    """A request the chain would refuse is refused locally, naming the field, and nothing is queued."""
    assert main(["submit", "--upn", "not a upn"]) == 1
    assert "userPrincipalName" in capsys.readouterr().err


def test_a_verbose_flag_in_front_of_sandbox_reaches_the_sandbox(capsys) -> None:
    """`exoprov -v sandbox --help` shows the sandbox's own help (its --verbose) and exits 0."""
    with pytest.raises(SystemExit) as stopped:
        main(["-v", "sandbox", "--help"])
    assert stopped.value.code == 0
    assert "--verbose" in capsys.readouterr().out


def test_every_command_help_names_the_usage_and_interrupt_exit_codes(capsys) -> None:
    """Each command's help says that a wrong command line exits 2 and Ctrl-C 130, besides its own codes."""
    for command in ("sweep", "undo", "journal", "doctor", "worker", "submit", "results"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "2 before anything runs when the command line is wrong, and 130 on Ctrl-C" in capsys.readouterr().out
