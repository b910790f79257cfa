"""Typed settings, read once from the environment; every bad value is reported at start, by name."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

T = TypeVar("T")


@dataclass(frozen=True)
class Cloud:
    """One national cloud: where requests go by default, and which resource tokens are for."""

    name: str
    graph_resource: str
    exchange_resource: str
    authority_host: str


CLOUDS: dict[str, Cloud] = {
    "public": Cloud(
        "public",
        "https://graph.microsoft.com",
        "https://outlook.office365.com",
        "login.microsoftonline.com",
    ),
    "usgov": Cloud(
        "usgov",
        "https://graph.microsoft.us",
        "https://outlook.office365.us",
        "login.microsoftonline.us",
    ),
    "usgovdod": Cloud(
        "usgovdod",
        "https://dod-graph.microsoft.us",
        "https://outlook-dod.office365.us",
        "login.microsoftonline.us",
    ),
    # Unverified against a real tenant: the ExchangeOnlineManagement module's own environment table uses
    # partner.outlook.cn (host and token resource); Learn names outlook.office365.cn for the v2.0 API only.
    "china": Cloud(
        "china",
        "https://microsoftgraph.chinacloudapi.cn",
        "https://partner.outlook.cn",
        "login.chinacloudapi.cn",
    ),
}

RECIPIENT_TYPES = ("UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox")
MAILBOX_TYPES = ("User", "Shared", "Room", "Equipment")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_SKU_PART = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
HOUR, DAY, WEEK = 3600.0, 86400.0, 7 * 86400.0
MONTH_MINUTES = 31 * 24 * 60.0


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment (README "Settings")."""

    storage: str | None = None
    storage_queue_service_uri: str | None = None
    storage_credential: str | None = None
    storage_client_id: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    certificate_path: str | None = None
    certificate_password: str | None = field(default=None, repr=False)
    cloud: Cloud = CLOUDS["public"]
    graph_endpoint: str = CLOUDS["public"].graph_resource
    exchange_endpoint: str = CLOUDS["public"].exchange_resource
    enforce_schedule: str = "0 0 */4 * * *"
    enforce_mode: str = "report"
    enforce_max_changes: int = 500
    enforce_recipient_types: frozenset[str] = frozenset(RECIPIENT_TYPES)
    enforce_exclude: frozenset[str] = frozenset()
    enforce_concurrency: int = 2
    enforce_time_budget_seconds: float = 1500.0
    allowed_licenses: tuple[str, ...] = ()
    default_license: str | None = None
    default_usage_location: str | None = None
    sync_wait_minutes: float = 1440.0
    mailbox_wait_minutes: float = 1440.0
    poll_min_seconds: float = 60.0
    poll_max_seconds: float = 900.0
    conversion_wait_minutes: float = 60.0
    replication_wait_seconds: float = 300.0
    license_wait_minutes: float = 10.0
    worker_concurrency: int = 4
    queue_retry_seconds: int = 30
    worker_lease_seconds: int = 45  # a killed worker's messages come back within a minute
    storage_blob_service_uri: str | None = None
    http_connect_timeout_seconds: float = 10.0
    http_read_timeout_seconds: float = 120.0
    http_max_retry_after_seconds: float = 300.0
    http_max_attempts: int = 6
    http_backoff_seconds: float = 1.0

    @property
    def has_storage(self) -> bool:
        """Whether AzureWebJobsStorage names a storage account (queues, ledger, journal)."""
        return bool(self.storage or (self.storage_queue_service_uri and self.storage_blob_service_uri))

    @property
    def graph_resource(self) -> str:
        """The token resource for Graph: always the cloud's, whatever GRAPH_ENDPOINT says."""
        return self.cloud.graph_resource

    @property
    def exchange_resource(self) -> str:
        """The token resource for Exchange: always the cloud's, whatever EXCHANGE_ENDPOINT says."""
        return self.cloud.exchange_resource

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise one ConfigurationError listing every problem."""
        reader = _Reader(os.environ if env is None else env)
        cloud = reader.get("CLOUD", CLOUDS["public"], _choice(tuple(CLOUDS)), CLOUDS.__getitem__)
        poll_min = reader.get("POLL_MIN_SECONDS", 60.0, _duration(0, WEEK))
        poll_max = reader.get("POLL_MAX_SECONDS", 900.0, _duration(0, WEEK))
        settings = cls(
            storage=reader.get("AzureWebJobsStorage", None, _storage_connection, secret=True),
            storage_queue_service_uri=reader.get("AzureWebJobsStorage__queueServiceUri", None, _url(allow_path=True)),
            storage_credential=reader.get("AzureWebJobsStorage__credential", None, _choice(("managedidentity",))),
            storage_client_id=reader.optional("AzureWebJobsStorage__clientId"),
            tenant_id=reader.get("AZURE_TENANT_ID", None, _guid),
            client_id=reader.optional("AZURE_CLIENT_ID"),
            certificate_path=reader.get("AZURE_CLIENT_CERTIFICATE_PATH", None, _existing_file),
            certificate_password=reader.optional("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            cloud=cloud,
            graph_endpoint=reader.get("GRAPH_ENDPOINT", cloud.graph_resource, _url()),
            exchange_endpoint=reader.get("EXCHANGE_ENDPOINT", cloud.exchange_resource, _url()),
            enforce_schedule=reader.get("ENFORCE_SCHEDULE", "0 0 */4 * * *", _ncrontab),
            enforce_mode=reader.get("ENFORCE_MODE", "report", _choice(("report", "apply"))),
            enforce_max_changes=reader.get("ENFORCE_MAX_CHANGES", 500, _int_between(0, 10**9)),
            enforce_recipient_types=reader.get("ENFORCE_RECIPIENT_TYPES", frozenset(RECIPIENT_TYPES), _recipient_types),
            enforce_exclude=reader.get("ENFORCE_EXCLUDE", frozenset(), _identity_set),
            enforce_concurrency=reader.get("ENFORCE_CONCURRENCY", 2, _int_between(1, 16)),
            enforce_time_budget_seconds=reader.get("ENFORCE_TIME_BUDGET_SECONDS", 1500.0, _duration(0.1, DAY)),
            allowed_licenses=reader.get("ALLOWED_LICENSES", (), _licenses),
            default_license=reader.get("DEFAULT_LICENSE", None, _license),
            default_usage_location=reader.get("DEFAULT_USAGE_LOCATION", None, _country),
            sync_wait_minutes=reader.get("SYNC_WAIT_MINUTES", 1440.0, _duration(0, MONTH_MINUTES)),
            mailbox_wait_minutes=reader.get("MAILBOX_WAIT_MINUTES", 1440.0, _duration(0, MONTH_MINUTES)),
            poll_min_seconds=poll_min,
            poll_max_seconds=poll_max,
            conversion_wait_minutes=reader.get("CONVERSION_WAIT_MINUTES", 60.0, _duration(0, MONTH_MINUTES)),
            replication_wait_seconds=reader.get("REPLICATION_WAIT_SECONDS", 300.0, _duration(0, DAY)),
            license_wait_minutes=reader.get("LICENSE_WAIT_MINUTES", 10.0, _duration(0, MONTH_MINUTES)),
            worker_concurrency=reader.get("WORKER_CONCURRENCY", 4, _int_between(1, 32)),
            queue_retry_seconds=reader.get("QUEUE_RETRY_SECONDS", 30, _int_between(0, 3600)),
            worker_lease_seconds=reader.get("WORKER_LEASE_SECONDS", 45, _int_between(1, 3600)),
            storage_blob_service_uri=reader.get("AzureWebJobsStorage__blobServiceUri", None, _url(allow_path=True)),
            http_connect_timeout_seconds=reader.get("HTTP_CONNECT_TIMEOUT_SECONDS", 10.0, _duration(0.1, HOUR)),
            http_read_timeout_seconds=reader.get("HTTP_READ_TIMEOUT_SECONDS", 120.0, _duration(0.1, HOUR)),
            http_max_retry_after_seconds=reader.get("HTTP_MAX_RETRY_AFTER_SECONDS", 300.0, _duration(0, HOUR)),
            http_max_attempts=reader.get("HTTP_MAX_ATTEMPTS", 6, _int_between(1, 20)),
            http_backoff_seconds=reader.get("HTTP_BACKOFF_SECONDS", 1.0, _duration(0, 60)),
        )
        if poll_min > poll_max:
            reader.problem("POLL_MIN_SECONDS", f"{poll_min:g} is above POLL_MAX_SECONDS ({poll_max:g})")
        default, allowed = settings.default_license, settings.allowed_licenses
        if default and allowed and not license_allowed(default, allowed):
            reader.problem("DEFAULT_LICENSE", "must be one of ALLOWED_LICENSES")
        reader.raise_problems()
        return settings


def license_allowed(license_id: str, allowed: tuple[str, ...]) -> bool:
    """Whether a SKU part number or skuId is on the allowlist (case-insensitive)."""
    return license_id.lower() in {item.lower() for item in allowed}


def is_loopback_host(host: str) -> bool:
    """Whether a host name is this machine, the only place plain http is allowed to go."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Collects every problem so that a person fixes all settings in one go, not one per start."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._problems: list[tuple[str, str]] = []

    def optional(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def get(
        self,
        name: str,
        default: T,
        parse: Callable[[str], object],
        convert: Callable[..., T] | None = None,
        *,
        secret: bool = False,
    ) -> T:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = parse(raw)
            return convert(value) if convert else value  # type: ignore[return-value]
        except ValueError as exc:
            shown = "the value" if secret else repr(_without_password(raw))
            self.problem(name, f"{shown} is not valid: {exc}")
            return default

    def problem(self, name: str, text: str) -> None:
        self._problems.append((name, text))

    def raise_problems(self) -> None:
        if not self._problems:
            return
        if len(self._problems) == 1:
            raise ConfigurationError(*self._problems[0])
        listing = "; ".join(f"{name}: {text}" for name, text in self._problems)
        raise ConfigurationError(self._problems[0][0], f"{len(self._problems)} problems: {listing}")


def _without_password(raw: str) -> str:
    """A value as it may be shown: a URL's user:password@ becomes ***@."""
    return re.sub(r"(?<=://)[^/@\s]*@", "***@", raw)


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _duration(low: float, high: float) -> Callable[[str], float]:
    """Seconds or minutes as plain ASCII decimals, within bounds (a timeout of 1e300 crashes a socket)."""

    def parse(raw: str) -> float:
        if not _DECIMAL.fullmatch(raw):
            raise ValueError(f"expected a number from {low:g} to {high:g} in plain digits, decimals allowed (e.g. 0.5)")
        value = float(raw)
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low:g} to {high:g}")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"[0-9]{1,12}", raw):  # int() would take "1_000" and non-ASCII digits
            raise ValueError(f"expected a whole number from {low} to {high} in plain digits")
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def _guid(raw: str) -> str:
    if not _GUID.match(raw):
        raise ValueError("expected a GUID such as 00000000-0000-0000-0000-000000000000")
    return str(uuid.UUID(raw))


def _existing_file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError("no such file (expected a PEM or PKCS#12 certificate path)")
    return raw


def _url(allow_path: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("expected a URL such as https://host[:port]")
        if parts.username or parts.password:
            raise ValueError("must not carry a user name or password (exoprov authenticates with its identity)")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("plain http is only allowed to a loopback host; use https")
        if not allow_path and parts.path not in ("", "/"):
            raise ValueError("expected scheme, host and port only (no /v1.0, no /adminapi)")
        if parts.query or parts.fragment:
            raise ValueError("expected no query string or fragment")
        return raw.rstrip("/")

    return parse


def _ncrontab(raw: str) -> str:
    """The worker's own parser decides (shared/cron.py): what passes here is exactly what the worker runs."""
    from shared.cron import Schedule

    return Schedule.parse(raw).expression  # every field, its names and range, and that it fires at all


def _storage_connection(raw: str) -> str:
    """A storage connection string the SDK can use; the key is checked, never echoed."""
    if raw.strip().lower() == "usedevelopmentstorage=true":
        return "UseDevelopmentStorage=true"
    parts: dict[str, str] = {}
    for item in raw.strip().strip(";").split(";"):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError("expected Name=value pairs separated by ';' (or UseDevelopmentStorage=true)")
        parts[name.strip().lower()] = value.strip()
    if not parts.get("accountname") and not (parts.get("queueendpoint") and parts.get("blobendpoint")):
        raise ValueError("names no AccountName (nor a QueueEndpoint and a BlobEndpoint)")
    if not (parts.get("accountkey") or parts.get("sharedaccesssignature")):
        raise ValueError("has neither AccountKey nor SharedAccessSignature")
    if parts.get("accountkey"):
        try:
            base64.b64decode(parts["accountkey"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("its AccountKey is not base64 (copy it again from the storage account)") from None
    if parts.get("defaultendpointsprotocol", "https") not in ("https", "http"):
        raise ValueError("DefaultEndpointsProtocol must be https (or http to a loopback host)")
    for name in ("queueendpoint", "blobendpoint"):
        if parts.get(name):
            _url(allow_path=True)(parts[name])
    explicit = parts.get("queueendpoint") and parts.get("blobendpoint")
    if parts.get("defaultendpointsprotocol") == "http" and not explicit:
        raise ValueError("plain http is only allowed to a loopback host (with its QueueEndpoint and BlobEndpoint)")
    return raw.strip()


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _recipient_types(raw: str) -> frozenset[str]:
    by_lower = {name.lower(): name for name in RECIPIENT_TYPES}
    chosen = set()
    for item in _split(raw):
        if item.lower() not in by_lower:
            raise ValueError(f"{item!r} is not one of {', '.join(RECIPIENT_TYPES)}")
        chosen.add(by_lower[item.lower()])
    if not chosen:
        raise ValueError("name at least one recipient type")
    return frozenset(chosen)


EXCLUDE_FORMS = (
    "UPNs, SMTP addresses (name@domain, any of a mailbox's addresses) or ExternalDirectoryObjectId GUIDs, "
    "separated by commas or semicolons; no wildcards or filters"
)
_ADDRESS = re.compile(r"^[^@\s*?,;()<>\[\]\\\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


def _identity_set(raw: str) -> frozenset[str]:
    entries = set()
    for item in (part.strip() for part in re.split(r"[,;]", raw)):
        if not item:
            continue
        value = item[5:] if item.lower().startswith("smtp:") else item  # as in EmailAddresses: SMTP:a@b
        if not (_GUID.match(value) or _ADDRESS.match(value)):
            raise ValueError(f"the entry {item!r} is none of the accepted forms: {EXCLUDE_FORMS}")
        entries.add(value.lower())
    return frozenset(entries)


def _license(raw: str) -> str:
    if _GUID.match(raw):
        return raw.lower()
    if not _SKU_PART.match(raw):
        raise ValueError("expected a SKU part number (EXCHANGESTANDARD) or a skuId GUID")
    return raw.upper()


def _licenses(raw: str) -> tuple[str, ...]:
    return tuple(_license(item) for item in _split(raw))


def _country(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", raw):
        raise ValueError("expected an ISO 3166 alpha-2 country code such as US or DE")
    return raw.upper()
