"""The clients behave as the real services answer: eventual consistency, odd errors, and answers that say less.

One test (or a few) per behaviour the services were found to have, over the sandbox and Azurite; see
docs/wire-protocols.md for the evidence behind each.
"""

from __future__ import annotations

import io
import logging
import re

import pytest

from shared.doctor import run_doctor
from shared.errors import (
    AuthenticationError,
    BadRequestError,
    CallContext,
    PermissionDeniedError,
    TokenUnavailableError,
    UnexpectedAnswerError,
)
from shared.exchange import Command, batch_items
from shared.graph import GraphClient
from shared.http import Response
from shared.settings import Settings
from shared.wiring import Clients
from tests.chain_helpers import collect_results, fresh_clients, request, run_worker, submit

STANDARD = "4b9405b0-7788-4568-add1-99614e613b69"


def _one_result(clients: Clients, request_id: str) -> dict[str, object]:
    assert run_worker(clients) == 0
    (result,) = collect_results(clients)[request_id]
    return result


@pytest.fixture
def lag_log(caplog: pytest.LogCaptureFixture, replication_lag) -> pytest.LogCaptureFixture:
    """The chain's INFO lines, where every wait for Entra replication is announced, with the sandbox lagging."""
    caplog.set_level(logging.INFO, logger="exoprov.provisioning")
    return caplog


def _waited_for(caplog: pytest.LogCaptureFixture, what: str) -> bool:
    return bool(_waits(caplog, what))


def _waits(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    """The delays (as logged, "1.0") of each wait for replication counted from the progress field `what`."""
    found = (re.search(rf"waits ([0-9.]+) s \({what} ", r.getMessage()) for r in caplog.records)
    return [match.group(1) for match in found if match]


# -- 1. assignLicense's answer is an acknowledgement; the outcome is read back --------------------------


def test_assign_license_is_confirmed_by_reading_the_user_back(chain_env, sandbox, lag_log) -> None:
    """The 200 of assignLicense carries no licenses: the chain reads the user until the license shows."""
    sandbox.add_user(upn="confirm@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("confirm", "confirm@contoso.com"))
    result = _one_result(clients, "confirm")
    assert result["status"] == "succeeded" and result["recipientTypeDetails"] == "UserMailbox"
    assert _waited_for(lag_log, "licenseAssignedAt")
    assert sandbox.licenses()["confirm@contoso.com"] == [STANDARD]


def test_the_wait_for_an_accepted_license_backs_off_from_one_second(chain_env, sandbox, lag_log) -> None:
    """Waiting for our assignment to show is a wait of its own: 1 s first, whatever the wait for the user took."""
    sandbox.add_user(upn="fresh.backoff@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("fresh-backoff", "fresh.backoff@contoso.com"))
    assert _one_result(clients, "fresh-backoff")["status"] == "succeeded"
    assert _waits(lag_log, "userFirstSeenAt")  # the write was refused first: the user's replication was waited out
    assert _waits(lag_log, "licenseAssignedAt")[0] == "1.0"


def test_a_license_accepted_but_never_shown_ends_the_request_after_the_window(chain_env, sandbox, monkeypatch) -> None:
    """If reads never show the accepted license within REPLICATION_WAIT_SECONDS: internal_error, saying so."""
    monkeypatch.setenv("REPLICATION_WAIT_SECONDS", "2")
    sandbox.add_user(upn="invisible@contoso.com", usageLocation="DE")
    sandbox.knobs(replication_lag=600)  # after the user replicated: only the license lags, for good
    clients = fresh_clients()
    submit(clients, request("invisible", "invisible@contoso.com"))
    result = _one_result(clients, "invisible")
    error = result["error"]
    assert isinstance(error, dict) and error["code"] == "internal_error"
    assert "accepted the assignment" in error["message"] and "REPLICATION_WAIT_SECONDS=2" in error["message"]


def test_a_license_removal_is_confirmed_by_reading_the_user_back(chain_env, sandbox, lag_log) -> None:
    """After removeLicenses answers 200 the chain reads until the license is gone, then reports it removed."""
    sandbox.add_user(upn="release@contoso.com", usageLocation="DE")
    clients = fresh_clients()
    submit(clients, request("release", "release@contoso.com", mailboxType="Shared"))
    result = _one_result(clients, "release")
    assert (result["status"], result["licenseRemoved"]) == ("succeeded", True)
    assert _waited_for(lag_log, "licenseRemovedAt")
    assert sandbox.licenses()["release@contoso.com"] == [] and sandbox.stats()["hazards"] == []


# -- 2. Entra is eventually consistent: our own writes' lag is never the user's error --------------------


def test_usage_location_refused_right_after_our_own_patch_is_waited_out(chain_env, sandbox, lag_log) -> None:
    """assignLicense says "invalid usage location" right after our PATCH: the chain waits, then licenses."""
    sandbox.add_user(upn="nolocation@contoso.com")
    clients = fresh_clients()
    submit(clients, request("nolocation", "nolocation@contoso.com"))
    assert _one_result(clients, "nolocation")["status"] == "succeeded"
    assert _waited_for(lag_log, "usageLocationSetAt")
    assert sandbox.stats()["statuses"].get("400", 0) >= 1


def test_a_user_unknown_to_writes_right_after_a_read_is_waited_out(chain_env, sandbox, lag_log) -> None:
    """A user that a read just returned can 404 on the write that follows: the chain waits, then licenses."""
    sandbox.add_user(upn="fresh@contoso.com", usageLocation="DE")  # created now: writable after the lag
    clients = fresh_clients()
    submit(clients, request("fresh", "fresh@contoso.com"))
    assert _one_result(clients, "fresh")["status"] == "succeeded"
    assert _waited_for(lag_log, "userFirstSeenAt")


def test_our_own_lag_that_never_ends_fails_with_the_contract_code(chain_env, sandbox, monkeypatch) -> None:
    """A usage location that never replicates ends with usage_location_missing once the window is over."""
    monkeypatch.setenv("REPLICATION_WAIT_SECONDS", "2")
    sandbox.add_user(upn="stale@contoso.com")
    sandbox.knobs(replication_lag=600)
    clients = fresh_clients()
    submit(clients, request("stale", "stale@contoso.com"))
    error = _one_result(clients, "stale")["error"]
    assert isinstance(error, dict) and error["code"] == "usage_location_missing"
    assert "waited" in error["message"] and sandbox.licenses()["stale@contoso.com"] == []


# -- 3. archives: ArchiveGuid tells the truth -----------------------------------------------------------


def test_an_archive_shows_in_archive_guid_while_archive_status_reads_none(clients: Clients, sandbox) -> None:
    """On a synced mailbox with an archive, ArchiveStatus reads None; ArchiveGuid and ArchiveDatabase do not."""
    sandbox.add_user(upn="vault@contoso.com", licenses=["EXCHANGESTANDARD"], mailboxType="User", archive=True)
    (box,) = (
        clients.exchange()
        .invoke(
            Command(
                "Get-Mailbox", {"Identity": "vault@contoso.com"}, ("ArchiveStatus", "ArchiveGuid", "ArchiveDatabase")
            )
        )
        .value
    )
    assert box["ArchiveStatus"] == "None"
    assert box["ArchiveGuid"] != "00000000-0000-0000-0000-000000000000" and box["ArchiveDatabase"]


# -- 4. Exchange errors whose reason is only in innererror ---------------------------------------------


def test_an_exchange_error_without_details_reports_the_innererror_reason(clients: Clients) -> None:
    """An invalid -Type answers 400 without details: the reason comes from innererror.internalexception."""
    with pytest.raises(BadRequestError, match="Unable to match the identifier name Castle"):
        clients.exchange().invoke(
            Command("Set-Mailbox", {"Identity": "UserWithMailWithEXO@contoso.com", "Type": "Castle"})
        )


# -- 5. identity: misconfiguration is permanent, an outage is not, a refused token is not resent -------


def test_an_identity_the_endpoint_does_not_know_ends_requests_with_permission_denied(
    chain_env, sandbox, monkeypatch
) -> None:
    """A wrong AZURE_CLIENT_ID is a configuration error: permission_denied, not retries into the poison queue."""
    sandbox.add_user(upn="orphan@contoso.com", usageLocation="DE")
    monkeypatch.setenv("AZURE_CLIENT_ID", "7c0f3a9e-0000-4000-8000-00000000dead")
    clients = fresh_clients()
    submit(clients, request("orphan", "orphan@contoso.com"))
    error = _one_result(clients, "orphan")["error"]
    assert isinstance(error, dict) and error["code"] == "permission_denied"
    assert "Unable to load the proper Managed Identity" in error["message"] and "AZURE_CLIENT_ID" in error["message"]


def test_the_doctor_says_how_to_fix_an_unknown_identity(env, monkeypatch) -> None:
    """The doctor names the endpoint's refusal and the settings that fix it, instead of a traceback."""
    monkeypatch.setenv("AZURE_CLIENT_ID", "7c0f3a9e-0000-4000-8000-00000000dead")
    out = io.StringIO()
    assert run_doctor(out) == 1
    text = out.getvalue()
    assert "FAIL  exchange token" in text and "Unable to load the proper Managed Identity" in text
    assert "AZURE_CLIENT_ID" in text


def test_a_token_endpoint_outage_stays_transient(settings: Settings, sandbox) -> None:
    """The identity endpoint answering 5xx is an outage: TokenUnavailableError, which the chain retries."""
    sandbox.knobs(token_outage_seconds=60)
    with pytest.raises(TokenUnavailableError, match="500"):
        Clients.from_settings(settings).tokens.get("https://outlook.office365.com")


def test_an_unknown_identity_is_an_authentication_error(settings: Settings, sandbox, monkeypatch) -> None:
    """The endpoint's 400 for an unknown client id is AuthenticationError (permanent, permission_denied)."""
    monkeypatch.setenv("AZURE_CLIENT_ID", "7c0f3a9e-0000-4000-8000-00000000dead")
    with pytest.raises(AuthenticationError) as raised:
        Clients.from_settings(Settings.from_env()).tokens.get("https://graph.microsoft.com")
    assert raised.value.code == "permission_denied"


def test_a_401_without_a_claims_challenge_is_not_resent_with_the_same_token(clients: Clients, sandbox) -> None:
    """A 401 for a missing role has no claims challenge: resending the cached token would change nothing."""
    sandbox.knobs(roles={"https://outlook.office365.com": [], "https://graph.microsoft.com": []})
    exchange = clients.exchange()
    with pytest.raises(PermissionDeniedError, match="Exchange.ManageAsApp"):
        exchange.invoke(Command("Get-OrganizationConfig"))
    assert sandbox.stats()["requests"]["InvokeCommand Get-OrganizationConfig"] == 1


def test_a_401_with_a_claims_challenge_gets_a_fresh_token(clients: Clients, sandbox) -> None:
    """When the service challenges for claims (rotated keys), one fresh token is fetched and the call succeeds."""
    exchange = clients.exchange()
    sandbox.rotate_keys()
    exchange.invoke(Command("Get-OrganizationConfig"))
    assert sandbox.stats()["requests"]["InvokeCommand Get-OrganizationConfig"] == 2


# -- 6. ResultSize: the doctor reads one page and stops -------------------------------------------------


def test_the_doctor_reads_one_page_of_mailboxes_and_stops(env, sandbox) -> None:
    """In a tenant of 3,000 mailboxes the doctor's Exchange check sends one Get-Mailbox, not a paged listing."""
    sandbox.reset({"generate": {"mailboxes": 3000, "candidates": 10}})
    run_doctor(io.StringIO())
    assert sandbox.stats()["requests"]["InvokeCommand Get-Mailbox"] == 1


def test_a_numeric_result_size_cuts_the_answer_with_a_warning_and_a_dead_link(clients: Clients, sandbox) -> None:
    """As a live capture shows: ResultSize N gives N rows, a "more results" warning, and a link that fails."""
    exchange = clients.exchange()
    pages = exchange.pages(Command("Get-Mailbox", {"ResultSize": 2}, ("UserPrincipalName",)))
    assert len(next(pages)) == 2
    with pytest.raises(BadRequestError, match="Expired or Invalid pagination request"):
        next(pages)


# -- 7. any 2xx is success; a nextLink elsewhere is an actionable error ---------------------------------


def test_any_2xx_is_success(clients: Clients) -> None:
    """A 201 or 204 is success for Graph and for a $batch item, not an error with an odd status."""
    graph = clients.graph()
    assert isinstance(graph, GraphClient)
    assert graph._payload(Response(204, {}, b"", CallContext("test", "op")), write=True) == {}
    assert graph._payload(Response(201, {}, b'{"id": "x"}', CallContext("test", "op")), write=True) == {"id": "x"}
    (item,) = batch_items({"responses": [{"id": "0", "status": 204, "body": None}]}, [Command("Set-Mailbox")], "c")
    assert item.error is None and item.result is not None and item.result.value == []


def test_a_next_link_to_another_host_is_an_actionable_error(clients: Clients, sandbox) -> None:
    """A nextLink outside EXCHANGE_ENDPOINT is refused with an error naming the host and the setting."""
    sandbox.knobs(nextlink_origin="https://elsewhere.example")
    pages = clients.exchange().pages(
        Command("Get-Mailbox", {"ResultSize": "Unlimited"}, ("UserPrincipalName",)), page_size=2
    )
    next(pages)
    with pytest.raises(UnexpectedAnswerError, match=r"https://elsewhere\.example.*EXCHANGE_ENDPOINT"):
        next(pages)


# -- 8. sovereign clouds --------------------------------------------------------------------------------


def test_china_uses_the_exchange_host_of_the_modules_own_environment_table() -> None:
    """CLOUD=china sends Exchange calls and tokens to partner.outlook.cn, as the ExchangeOnlineManagement module."""
    settings = Settings.from_env({"CLOUD": "china"})
    assert settings.exchange_endpoint == settings.exchange_resource == "https://partner.outlook.cn"


# -- 9. OData string literals ---------------------------------------------------------------------------


def test_odata_literal_doubles_apostrophes(clients: Clients, sandbox) -> None:
    """A UPN starting with $ goes in users('...'), where an apostrophe is doubled as OData requires."""
    sandbox.add_user(upn="$o'neil@contoso.com", usageLocation="IE")
    user = clients.graph().get_user("$o'neil@contoso.com")
    assert user is not None and user.user_principal_name == "$o'neil@contoso.com"


# -- 10. concurrency --------------------------------------------------------------------------------------


def test_enforce_concurrency_defaults_to_two_batches_in_flight() -> None:
    """Exchange's per-tenant limit is unpublished and shared with every admin tool: two in flight by default."""
    assert Settings.from_env({}).enforce_concurrency == 2


def test_the_tenants_clock_can_be_moved_on_instead_of_waiting(clients: Clients, sandbox) -> None:
    """A user created with a sync delay is unknown to Graph until the tenant's clock passes it; advancing the
    clock (what a test does instead of sleeping) brings it due at once, and a reset puts the clock back."""
    sandbox.add_user(upn="synced.later@contoso.com", syncDelaySeconds=600)
    assert clients.graph().get_user("synced.later@contoso.com") is None
    assert sandbox.advance(599) == 599
    assert clients.graph().get_user("synced.later@contoso.com") is None
    assert sandbox.advance(2) == 601
    user = clients.graph().get_user("synced.later@contoso.com")
    assert user is not None and user.user_principal_name == "synced.later@contoso.com"
    sandbox.reset()
    assert sandbox.advance(0) == 0
