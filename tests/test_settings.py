"""Settings are read once, validated, and every bad value is named with its accepted form."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import CLOUDS, Settings, license_allowed, parse_country, parse_license


def test_defaults_follow_the_contract() -> None:
    """With nothing set, the defaults are those of the README's settings table."""
    settings = Settings.from_env({})
    assert settings.cloud is CLOUDS["public"]
    assert settings.exchange_endpoint == "https://outlook.office365.com"
    assert settings.graph_endpoint == "https://graph.microsoft.com"
    assert settings.enforce_schedule == "0 0 */4 * * *"
    assert settings.enforce_mode == "report"
    assert settings.enforce_max_changes == 500
    assert settings.enforce_recipient_types == {"UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox"}
    assert settings.enforce_concurrency == 2
    assert (settings.sync_wait_minutes, settings.mailbox_wait_minutes) == (1440, 1440)
    assert (settings.poll_min_seconds, settings.poll_max_seconds) == (60, 900)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ENFORCE_MODE", "fix", "expected one of report, apply"),
        ("ENFORCE_MAX_CHANGES", "-1", "whole number from 0"),
        ("ENFORCE_RECIPIENT_TYPES", "UserMailbox,MailUser", "'MailUser' is not one of"),
        ("ENFORCE_SCHEDULE", "every 4 hours", "NCRONTAB with 6 fields"),
        ("ENFORCE_CONCURRENCY", "0", "whole number from 1 to 16"),
        ("CLOUD", "mars", "expected one of public, usgov, usgovdod, china"),
        ("AZURE_TENANT_ID", "contoso", "expected a GUID"),
        ("POLL_MIN_SECONDS", "soon", "decimals allowed"),
        ("DEFAULT_USAGE_LOCATION", "Germany", "ISO 3166 alpha-2"),
        ("EXCHANGE_ENDPOINT", "https://outlook.office365.com/adminapi", "no /v1.0, no /adminapi"),
        ("GRAPH_ENDPOINT", "http://graph.example.com", "plain http is only allowed to a loopback host"),
    ],
)
def test_bad_value_names_the_setting_and_the_accepted_form(name: str, value: str, expected: str) -> None:
    """A bad value is refused at start with the setting's name and what it accepts."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: value})
    assert caught.value.setting == name
    assert name in str(caught.value) and expected in str(caught.value)


def test_every_problem_is_reported_in_one_go() -> None:
    """Two bad settings give one error naming both, so a person fixes them in one pass."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"ENFORCE_MODE": "fix", "ENFORCE_MAX_CHANGES": "many"})
    assert "2 problems" in str(caught.value)
    assert "ENFORCE_MODE" in str(caught.value) and "ENFORCE_MAX_CHANGES" in str(caught.value)


def test_durations_accept_decimals() -> None:
    """Waits and budgets may be fractions, so tests and small tenants can use short ones."""
    settings = Settings.from_env({"POLL_MIN_SECONDS": "0.5", "POLL_MAX_SECONDS": "1.5", "SYNC_WAIT_MINUTES": "0.25"})
    assert (settings.poll_min_seconds, settings.poll_max_seconds, settings.sync_wait_minutes) == (0.5, 1.5, 0.25)


def test_poll_minimum_above_maximum_is_refused() -> None:
    """POLL_MIN_SECONDS above POLL_MAX_SECONDS cannot produce a sane backoff."""
    with pytest.raises(ConfigurationError, match="POLL_MIN_SECONDS"):
        Settings.from_env({"POLL_MIN_SECONDS": "100", "POLL_MAX_SECONDS": "10"})


def test_loopback_endpoints_may_use_plain_http() -> None:
    """http is allowed to 127.0.0.1, ::1 and localhost only (the sandbox), and a trailing slash is dropped."""
    for host in ("127.0.0.1:8765", "[::1]:8765", "localhost:8765"):
        assert Settings.from_env({"EXCHANGE_ENDPOINT": f"http://{host}/"}).exchange_endpoint == f"http://{host}"


def test_token_resources_follow_the_cloud_not_the_endpoint_override() -> None:
    """Overriding where requests go never changes which resource a token is for."""
    settings = Settings.from_env({"CLOUD": "usgov", "EXCHANGE_ENDPOINT": "http://127.0.0.1:1"})
    assert settings.exchange_resource == "https://outlook.office365.us"
    assert settings.graph_endpoint == "https://graph.microsoft.us"
    assert settings.exchange_endpoint == "http://127.0.0.1:1"


def test_exclusions_and_licenses_are_case_insensitive() -> None:
    """ENFORCE_EXCLUDE and ALLOWED_LICENSES match whatever case a person typed."""
    settings = Settings.from_env(
        {
            "ENFORCE_EXCLUDE": " VIP@Contoso.com , 6F1C7C4E-0000-4000-8000-00000000C0DE ",
            "ALLOWED_LICENSES": "exchangestandard",
        }
    )
    assert settings.enforce_exclude == {"vip@contoso.com", "6f1c7c4e-0000-4000-8000-00000000c0de"}
    assert license_allowed("ExchangeStandard", settings.allowed_licenses)


def test_certificate_password_never_shows_in_repr(tmp_path) -> None:
    """A settings object printed in a log never reveals the certificate password."""
    cert = tmp_path / "app.pem"
    cert.write_text("not a real certificate")
    settings = Settings.from_env(
        {"AZURE_CLIENT_CERTIFICATE_PATH": str(cert), "AZURE_CLIENT_CERTIFICATE_PASSWORD": "hunter2"}
    )
    assert "hunter2" not in repr(settings)


def test_a_storage_connection_string_never_shows_in_repr() -> None:
    """A settings object printed in a log never reveals the storage account key."""
    settings = Settings.from_env({"AzureWebJobsStorage": "AccountName=x;AccountKey=c2VjcmV0a2V5"})
    assert "c2VjcmV0a2V5" not in repr(settings)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__blobServiceUri"),
        ("AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri"),
    ],
)
def test_half_of_identity_based_storage_names_the_missing_uri(given: str, missing: str) -> None:
    """One service URI without the other is refused at start under the name of the one to add."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({given: "https://account.example.net/"})
    assert caught.value.setting == missing and given in str(caught.value)


@pytest.mark.parametrize("name", ["AZURE_CLIENT_ID", "AzureWebJobsStorage__clientId"])
def test_a_client_id_that_is_no_guid_is_refused(name: str) -> None:
    """A client id is an Entra GUID; anything else is refused at start instead of failing every token request."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: "exoprov-app"})
    assert caught.value.setting == name and "expected a GUID" in str(caught.value)


def test_license_and_country_rules_refuse_a_trailing_newline() -> None:
    """parse_license and parse_country match the whole text: a value with a newline after it is no SKU or code."""
    assert (parse_license("exchangestandard"), parse_country("de")) == ("EXCHANGESTANDARD", "DE")
    for parse, value in ((parse_license, "EXCHANGESTANDARD\n"), (parse_country, "DE\n")):
        with pytest.raises(ValueError):
            parse(value)
