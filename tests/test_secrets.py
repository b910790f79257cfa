"""Where tokens go: only to their own service, never into a log, and no key or password either."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.azurite import DEV_KEY
from shared.cli import main
from shared.errors import UnexpectedAnswerError
from shared.logs import capture_logs
from shared.runs import run_sweep
from shared.settings import Settings
from tests.chain_helpers import collect_results, fresh_clients, request, run_worker, submit


@pytest.fixture
def all_logs() -> Iterator[list[dict[str, Any]]]:
    """Every record of every logger at DEBUG, with its attributes and traceback."""
    with capture_logs(logger="", level=logging.DEBUG) as logs:
        yield logs


def _text(logs: list[dict[str, Any]]) -> str:
    """Every value of every captured record (message, traceback, extras such as an audit event), one per line."""
    return "\n".join(str(value) for entry in logs for value in entry.values())


def test_no_token_key_or_identity_secret_in_any_log_of_a_chain_and_a_sweep(
    chain_env, sandbox, all_logs: list[dict[str, Any]], capsys
) -> None:
    """A full chain, a sweep and the doctor, logged at DEBUG by every library: no secret appears anywhere."""
    sandbox.add_user(upn="logged@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("log-1", "logged@contoso.com", mailboxType="Shared"))
    assert run_worker(clients) == 0
    assert collect_results(clients)["log-1"][0]["status"] == "succeeded"
    run_sweep(clients, apply=True)
    assert main(["doctor"]) == 0
    output = capsys.readouterr()
    secrets = [
        clients.tokens.get(clients.settings.exchange_resource).value,
        clients.tokens.get(clients.settings.graph_resource).value,
        chain_env["IDENTITY_HEADER"],
        DEV_KEY,
    ]
    text = _text(all_logs) + output.out + output.err
    assert len(all_logs) > 50  # the capture really saw the run
    for secret in secrets:
        assert secret not in text
        assert secret[:40] not in text  # not even a prefix of it


def test_a_graph_token_never_leaves_for_another_host(env) -> None:
    """The Graph client refuses a URL outside GRAPH_ENDPOINT before any token is attached."""
    http = fresh_clients().graph()._http
    with pytest.raises(UnexpectedAnswerError, match="outside GRAPH_ENDPOINT"):
        http.request("GET", "https://graph.example.net/v1.0/users", write=False, operation="x")


def test_each_token_goes_to_its_own_service_only(env, sandbox) -> None:
    """Graph calls carry a token for Graph's resource, Exchange calls one for Exchange's, even on one host."""
    clients = fresh_clients()
    clients.graph().skus()
    clients.exchange()
    assert sandbox.stats()["statuses"].get("401", 0) == 0  # the sandbox refuses a token meant for the other service
    assert sandbox.stats()["tokens"] == {"https://outlook.office365.com": 1, "https://graph.microsoft.com": 1}


def test_the_certificate_password_never_shows(
    env, tmp_path, monkeypatch, all_logs: list[dict[str, Any]], capsys
) -> None:
    """With a (broken) certificate configured, failures are explained without revealing its password."""
    cert = tmp_path / "app.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(cert))
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", "Tr0ub4dor&3-not-in-logs")
    monkeypatch.setenv("AZURE_TENANT_ID", "6f1c7c4e-0000-4000-8000-00000000c0de")
    monkeypatch.setenv("AZURE_CLIENT_ID", "9d1b8c3e-5a7f-4e2b-8c1d-5a0e5a0e5a0e")
    assert main(["doctor"]) == 1
    output = capsys.readouterr()
    assert (
        "FAIL  settings" in output.out
        and "cannot load" in output.out
        and "AZURE_CLIENT_CERTIFICATE_PASSWORD" in output.out
    )
    assert "Tr0ub4dor" not in output.out + output.err + _text(all_logs)
    assert "Tr0ub4dor" not in repr(Settings.from_env())
