"""Typed settings, read once from the environment; every bad value is reported at start, by name.

`SETTINGS` is the one list of them: each row gives the environment name, the `Settings` field, the default as
it would be written in the environment, the parser that checks a value, and the line README "Settings" shows.
`Settings.from_env` reads them in that order, the README table is rendered from it (`python -m shared.settings`
prints it; tests/test_settings_table.py keeps the two equal), and the tests clear exactly these names.
To add a setting: one row here, one typed field on `Settings`, then paste the printed table into the README.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import itertools
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

__all__ = [
    "CLOUDS",
    "ENFORCED_OBJECTS",
    "MAILBOX_TYPES",
    "NAME_PREFIX",
    "SETTINGS",
    "Settings",
    "is_loopback_host",
    "license_allowed",
    "parse_country",
    "parse_license",
    "readme_rows",
    "readme_table",
]

C = TypeVar("C", bound=type)


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
# `\Z`, not `$`: `$` also matches before a trailing newline, so "DE\n" would pass a `$` pattern.
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
SKU_PART = re.compile(r"^[A-Za-z0-9_.+-]{1,64}\Z")
COUNTRY = re.compile(r"^[A-Za-z]{2}\Z")
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
HOUR, DAY, WEEK = 3600.0, 86400.0, 7 * 86400.0
MONTH_MINUTES = 31 * 24 * 60.0
# The kinds of synced object the sweep can make cloud-managed, in the order a sweep takes them.
ENFORCED_OBJECTS = ("mailboxes", "groups", "contacts")
EXCLUDE_FORMS = (
    "UPNs, SMTP addresses (name@domain, any of an object's addresses), object id GUIDs (a mailbox's "
    "ExternalDirectoryObjectId, a group's or contact's id) or `name:` and a group's or contact's display name, "
    "separated by commas or semicolons; no wildcards or filters"
)
NAME_PREFIX = "name:"  # a display name must say so: a bare word is more often a typo than a name
_ADDRESS = re.compile(r"^[^@\s*?,;()<>\[\]\\\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


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


# -- parsers: each takes the stripped, non-empty text of a setting and returns its value or raises ValueError ----


def _text(raw: str) -> str:
    return raw


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _cloud(raw: str) -> Cloud:
    return CLOUDS[_choice(tuple(CLOUDS))(raw)]


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
    if not GUID.match(raw):
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


def _objects(raw: str) -> tuple[str, ...]:
    chosen = {item.lower() for item in _split(raw)}
    unknown = sorted(chosen - set(ENFORCED_OBJECTS))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(ENFORCED_OBJECTS)}")
    if not chosen:
        raise ValueError(f"name at least one of {', '.join(ENFORCED_OBJECTS)}")
    return tuple(kind for kind in ENFORCED_OBJECTS if kind in chosen)


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value not in ("true", "false"):
        raise ValueError("expected true or false")
    return value == "true"


def _identity_set(raw: str) -> frozenset[str]:
    entries = set()
    for item in (part.strip() for part in re.split(r"[,;]", raw)):
        if not item:
            continue
        if item.lower().startswith(NAME_PREFIX):
            name = " ".join(item[len(NAME_PREFIX) :].split())
            if not name:
                raise ValueError(f"the entry {item!r} names no display name after {NAME_PREFIX!r}")
            entries.add(NAME_PREFIX + name.lower())
            continue
        value = item[5:] if item.lower().startswith("smtp:") else item  # as in EmailAddresses: SMTP:a@b
        if not (GUID.match(value) or _ADDRESS.match(value)):
            raise ValueError(f"the entry {item!r} is none of the accepted forms: {EXCLUDE_FORMS}")
        entries.add(value.lower())
    return frozenset(entries)


def parse_license(raw: str) -> str:
    """A SKU part number in upper case or a skuId GUID in lower case; ValueError for anything else."""
    if GUID.match(raw):
        return raw.lower()
    if not SKU_PART.match(raw):
        raise ValueError("expected a SKU part number (EXCHANGESTANDARD) or a skuId GUID")
    return raw.upper()


def _licenses(raw: str) -> tuple[str, ...]:
    return tuple(parse_license(item) for item in _split(raw))


def parse_country(raw: str) -> str:
    """An ISO 3166 alpha-2 code in upper case; ValueError for anything else."""
    if not COUNTRY.match(raw):
        raise ValueError("expected an ISO 3166 alpha-2 country code such as US or DE")
    return raw.upper()


# -- the table ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting: its environment name, its `Settings` field, its default, its parser and its README line.

    The default is written as text and goes through the parser like a value from the environment, so a default
    always passes its own rule and the README shows it as a person would type it.
    """

    name: str  # the environment variable (app setting) that holds it
    attr: str  # the `Settings` field that carries it, typed
    default: str | None  # as it would be written in the environment, parsed like any value; None: unset
    parse: Callable[[str], object]  # the stripped text to the value, or ValueError saying what is accepted
    doc: str  # its meaning in README "Settings"; empty when it shares the row of the setting above it
    group: str = ""  # settings with the same group, listed one after another, share one README row
    shown_default: str = ""  # the README's default when words say it better than the value ("per cloud")
    secret: bool = False  # its value is never echoed in a problem, nor in the repr of `Settings`
    # The default when it follows settings read before it (the endpoints follow CLOUD); `default` is then the
    # default of the `Settings` dataclass itself.
    default_from: Callable[[Mapping[str, Any]], object] | None = None

    @property
    def value(self) -> object:
        """The default as the field holds it."""
        return None if self.default is None else self.parse(self.default)

    @property
    def readme_default(self) -> str:
        """How README "Settings" shows the default."""
        if self.shown_default:
            return self.shown_default
        if self.default is None:
            return "none"
        return f"`{self.default}`" if self.default else "empty"


_WAIT = _duration(0, MONTH_MINUTES)
_POLL = _duration(0, WEEK)
_TIMEOUT = _duration(0.1, HOUR)

SETTINGS: tuple[Setting, ...] = (
    Setting("AZURE_TENANT_ID", "tenant_id", None, _guid, "tenant GUID", shown_default="the token's `tid` claim"),
    Setting(
        "AZURE_CLIENT_ID",
        "client_id",
        None,
        _guid,
        "client id of a user-assigned identity or app registration",
        shown_default="system identity",
    ),
    Setting(
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "certificate_path",
        None,
        _existing_file,
        "certificate auth (job server, laptop)",
        group="certificate",
    ),
    Setting(
        "AZURE_CLIENT_CERTIFICATE_PASSWORD", "certificate_password", None, _text, "", group="certificate", secret=True
    ),
    Setting(
        "CLOUD",
        "cloud",
        "public",
        _cloud,
        f"{', '.join(f'`{name}`' for name in CLOUDS)}: endpoints and token resources",
    ),
    Setting(
        "GRAPH_ENDPOINT",
        "graph_endpoint",
        CLOUDS["public"].graph_resource,
        _url(),
        "override where requests go (scheme, host, port; https, or http to a loopback host). Never changes the "
        "token's resource",
        group="endpoints",
        shown_default="per cloud",
        default_from=lambda read: read["cloud"].graph_resource,
    ),
    Setting(
        "EXCHANGE_ENDPOINT",
        "exchange_endpoint",
        CLOUDS["public"].exchange_resource,
        _url(),
        "",
        group="endpoints",
        shown_default="per cloud",
        default_from=lambda read: read["cloud"].exchange_resource,
    ),
    Setting("ENFORCE_SCHEDULE", "enforce_schedule", "0 0 */4 * * *", _ncrontab, "NCRONTAB, UTC; see below"),
    Setting(
        "READINESS_SCHEDULE",
        "readiness_schedule",
        "0 30 5 * * *",
        _ncrontab,
        "NCRONTAB, UTC: when the readiness report is written to the `exoprov-reports` container",
    ),
    Setting("ENFORCE_MODE", "enforce_mode", "report", _choice(("report", "apply")), "`report` or `apply`"),
    Setting(
        "ENFORCE_OBJECTS",
        "enforce_objects",
        "mailboxes",
        _objects,
        "what the sweep makes cloud-managed: `mailboxes` (IsExchangeCloudManaged), `groups` and `contacts` (their "
        'source of authority, through Graph); comma-separated; see "Groups and contacts"',
    ),
    Setting(
        "ENFORCE_MAIL_ENABLED_GROUPS",
        "enforce_mail_enabled_groups",
        "false",
        _bool,
        "`true` lets the group sweep convert distribution lists and mail-enabled security groups too (they are "
        "then managed in Exchange Online and cannot go back to AD by group writeback)",
    ),
    Setting(
        "ENFORCE_MAX_CHANGES",
        "enforce_max_changes",
        "500",
        _int_between(0, 10**9),
        "the brake, counted per kind; 0 = no limit",
    ),
    Setting(
        "ENFORCE_RECIPIENT_TYPES",
        "enforce_recipient_types",
        ",".join(RECIPIENT_TYPES),
        _recipient_types,
        "types the sweep touches",
    ),
    Setting(
        "ENFORCE_EXCLUDE",
        "enforce_exclude",
        "",
        _identity_set,
        "objects never touched: UPNs, any of an object's SMTP addresses (an `SMTP:` prefix is fine), object ids "
        "(a mailbox's ExternalDirectoryObjectId, a group's or contact's id) or `name:` and a group's or contact's "
        "display name, separated by `,` or `;`, case-insensitive. Anything else (a wildcard, a filter, a bare "
        "name) is refused at start; an entry that matches nothing the sweep lists is named by the report and the "
        "doctor",
    ),
    Setting(
        "ENFORCE_CONCURRENCY",
        "enforce_concurrency",
        "2",
        _int_between(1, 16),
        "Exchange calls in flight from one process (the sweep's `$batch`es and the chain's cmdlets), 1-16; "
        'halved whenever Exchange refuses concurrent requests, and regrown slowly; see "Bounded writes" for the '
        "default",
    ),
    Setting(
        "ENFORCE_TIME_BUDGET_SECONDS",
        "enforce_time_budget_seconds",
        "1500",
        _duration(0.1, DAY),
        "stop starting new work after this long",
    ),
    Setting(
        "HTTP_CONNECT_TIMEOUT_SECONDS",
        "http_connect_timeout_seconds",
        "10",
        _TIMEOUT,
        "per-request timeouts",
        group="http timeouts",
    ),
    Setting("HTTP_READ_TIMEOUT_SECONDS", "http_read_timeout_seconds", "120", _TIMEOUT, "", group="http timeouts"),
    Setting(
        "HTTP_MAX_ATTEMPTS",
        "http_max_attempts",
        "6",
        _int_between(1, 20),
        "retry policy: attempts per call, backoff base (full jitter), cap on a Retry-After",
        group="http retries",
    ),
    Setting("HTTP_BACKOFF_SECONDS", "http_backoff_seconds", "1", _duration(0, 60), "", group="http retries"),
    Setting(
        "HTTP_MAX_RETRY_AFTER_SECONDS",
        "http_max_retry_after_seconds",
        "300",
        _duration(0, HOUR),
        "",
        group="http retries",
    ),
    Setting(
        "AzureWebJobsStorage",
        "storage",
        None,
        _storage_connection,
        "storage for the queues, the ledger and the journal (needed by every run that writes; `sweep --report` "
        "runs without it): a connection string or `UseDevelopmentStorage=true`; or, identity-based, both service "
        "URIs with `__credential=managedidentity` and the identity's `__clientId`",
        group="storage",
        secret=True,
    ),
    Setting(
        "AzureWebJobsStorage__queueServiceUri",
        "storage_queue_service_uri",
        None,
        _url(allow_path=True),
        "",
        group="storage",
    ),
    Setting(
        "AzureWebJobsStorage__blobServiceUri",
        "storage_blob_service_uri",
        None,
        _url(allow_path=True),
        "",
        group="storage",
    ),
    Setting(
        "AzureWebJobsStorage__credential",
        "storage_credential",
        None,
        _choice(("managedidentity",)),
        "",
        group="storage",
    ),
    Setting("AzureWebJobsStorage__clientId", "storage_client_id", None, _guid, "", group="storage"),
    Setting(
        "ALLOWED_LICENSES",
        "allowed_licenses",
        "",
        _licenses,
        "SKU part numbers or skuIds requests may ask for",
        shown_default="empty: every request is refused",
    ),
    Setting("DEFAULT_LICENSE", "default_license", None, parse_license, "request defaults", group="request defaults"),
    Setting("DEFAULT_USAGE_LOCATION", "default_usage_location", None, parse_country, "", group="request defaults"),
    Setting(
        "SYNC_WAIT_MINUTES",
        "sync_wait_minutes",
        "1440",
        _WAIT,
        "deadlines for the user, the mailbox, the new mailbox type",
        group="deadlines",
    ),
    Setting("MAILBOX_WAIT_MINUTES", "mailbox_wait_minutes", "1440", _WAIT, "", group="deadlines"),
    Setting("CONVERSION_WAIT_MINUTES", "conversion_wait_minutes", "60", _WAIT, "", group="deadlines"),
    Setting(
        "LICENSE_WAIT_MINUTES",
        "license_wait_minutes",
        "10",
        _WAIT,
        "how long a request waits for a free unit of its SKU (other requests may be returning theirs) before it "
        "ends with `no_licenses_available`",
    ),
    Setting(
        "POLL_MIN_SECONDS",
        "poll_min_seconds",
        "60",
        _POLL,
        "backoff between checks while waiting (doubling)",
        group="polling",
    ),
    Setting("POLL_MAX_SECONDS", "poll_max_seconds", "900", _POLL, "", group="polling"),
    Setting(
        "REPLICATION_WAIT_SECONDS",
        "replication_wait_seconds",
        "300",
        _duration(0, DAY),
        "how long the chain waits for Entra to show its own write (a license just assigned or removed, a usage "
        "location just set, a user just read) before it ends the request with the contract code",
    ),
    Setting(
        "WORKER_CONCURRENCY",
        "worker_concurrency",
        "4",
        _int_between(1, 32),
        "the worker only: messages in flight; pause before a failed message is retried; how long a message in "
        "hand stays invisible (renewed every third of it while its step runs; a killed worker's messages return "
        "within this long)",
        group="worker",
    ),
    Setting("QUEUE_RETRY_SECONDS", "queue_retry_seconds", "30", _int_between(0, 3600), "", group="worker"),
    # 45: a killed worker's messages come back within a minute.
    Setting("WORKER_LEASE_SECONDS", "worker_lease_seconds", "45", _int_between(1, 3600), "", group="worker"),
)


def _defaults_from(table: tuple[Setting, ...]) -> Callable[[C], C]:
    """Give each field of the class below its default from the table (and hide secrets from its repr)."""

    def apply(cls: C) -> C:
        for setting in table:
            setattr(cls, setting.attr, dataclasses.field(default=setting.value, repr=not setting.secret))
        return cls

    return apply


@dataclass(frozen=True)
@_defaults_from(SETTINGS)
class Settings:
    """Everything the app reads from its environment: one typed field per row of `SETTINGS` (README "Settings").

    The defaults, parsers and doc lines live in `SETTINGS`; build one with `Settings.from_env()`.
    """

    tenant_id: str | None
    client_id: str | None
    certificate_path: str | None
    certificate_password: str | None
    cloud: Cloud
    graph_endpoint: str
    exchange_endpoint: str
    enforce_schedule: str
    readiness_schedule: str
    enforce_mode: str
    enforce_objects: tuple[str, ...]
    enforce_mail_enabled_groups: bool
    enforce_max_changes: int
    enforce_recipient_types: frozenset[str]
    enforce_exclude: frozenset[str]
    enforce_concurrency: int
    enforce_time_budget_seconds: float
    http_connect_timeout_seconds: float
    http_read_timeout_seconds: float
    http_max_attempts: int
    http_backoff_seconds: float
    http_max_retry_after_seconds: float
    storage: str | None
    storage_queue_service_uri: str | None
    storage_blob_service_uri: str | None
    storage_credential: str | None
    storage_client_id: str | None
    allowed_licenses: tuple[str, ...]
    default_license: str | None
    default_usage_location: str | None
    sync_wait_minutes: float
    mailbox_wait_minutes: float
    conversion_wait_minutes: float
    license_wait_minutes: float
    poll_min_seconds: float
    poll_max_seconds: float
    replication_wait_seconds: float
    worker_concurrency: int
    queue_retry_seconds: int
    worker_lease_seconds: int

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
        read: dict[str, Any] = {}
        for setting in SETTINGS:
            default = setting.default_from(read) if setting.default_from else _DEFAULTS[setting.attr]
            read[setting.attr] = reader.get(setting.name, default, setting.parse, secret=setting.secret)
        settings = cls(**read)
        # Rules between settings, each reported under the setting to change.
        poll_min, poll_max = settings.poll_min_seconds, settings.poll_max_seconds
        if poll_min > poll_max:
            reader.problem("POLL_MIN_SECONDS", f"{poll_min:g} is above POLL_MAX_SECONDS ({poll_max:g})")
        default, allowed = settings.default_license, settings.allowed_licenses
        if default and allowed and not license_allowed(default, allowed):
            reader.problem("DEFAULT_LICENSE", "must be one of ALLOWED_LICENSES")
        queue_uri, blob_uri = settings.storage_queue_service_uri, settings.storage_blob_service_uri
        if bool(queue_uri) != bool(blob_uri):
            given, missing = ("queue", "blob") if queue_uri else ("blob", "queue")
            reader.problem(
                f"AzureWebJobsStorage__{missing}ServiceUri",
                f"is needed with AzureWebJobsStorage__{given}ServiceUri (identity-based storage names both)",
            )
        reader.raise_problems()
        return settings


_DEFAULTS: dict[str, object] = {field.name: field.default for field in dataclasses.fields(Settings)}


def readme_rows(table: tuple[Setting, ...] = SETTINGS) -> list[tuple[Setting, ...]]:
    """The settings as README "Settings" lists them: one row per setting, or per group of adjacent ones."""
    return [tuple(row) for _, row in itertools.groupby(table, key=lambda s: s.group or s.name)]


def readme_table(table: tuple[Setting, ...] = SETTINGS) -> str:
    """README "Settings" table in Markdown: names, meaning, default (one default when a row's are all equal)."""
    lines = ["| name | meaning | default |", "|---|---|---|"]
    for row in readme_rows(table):
        names = ", ".join(f"`{setting.name}`" for setting in row)
        defaults = [setting.readme_default for setting in row]
        shown = defaults[0] if len(set(defaults)) == 1 else ", ".join(defaults)
        lines.append(f"| {names} | {row[0].doc} | {shown} |")
    return "\n".join(lines) + "\n"


class _Reader:
    """Collects every problem so that a person fixes all settings in one go, not one per start."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._problems: list[tuple[str, str]] = []

    def get(self, name: str, default: object, parse: Callable[[str], object], *, secret: bool = False) -> object:
        """The parsed value of `name`, or `default` when it is unset, empty, or bad (then a problem is noted)."""
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
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


if __name__ == "__main__":  # python -m shared.settings: the table to paste into README "Settings"
    print(readme_table(), end="")
