"""`exoprov doctor`: preflight checks, one line each, with the fix when one fails.

`Doctor` has one method per check. `CHECKS` lists them in the order they print, each with the checks it
needs: a check runs only when every check it needs passed (or did not apply), so one cause gives one FAIL
and the checks it would have broken print nothing. To add a check, write a `check_*` method that returns
its "ok" detail, raises `CheckFailed(problem, fix)` or `Skipped(reason)`, and add it to `CHECKS`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TextIO

from shared.auth import AUTHORITY_ROLES, GRAPH_APP_ROLES, Token
from shared.enforcement import read_tenant_default
from shared.errors import ExoprovError, NotFoundError, PermissionDeniedError, ServiceUnavailableError
from shared.exchange import BATCH_LIMIT, ROLE, Command
from shared.settings import NAME_PREFIX, Settings
from shared.wiring import Clients

__all__ = ["CHECKS", "CheckFailed", "Doctor", "DoctorCheck", "Skipped", "run_doctor"]

GRANT_EXCHANGE_ROLE = (
    "grant the identity the Exchange.ManageAsApp application role: "
    "New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId <identity object id> "
    "-PrincipalId <identity object id> -ResourceId (Get-MgServicePrincipal -Filter "
    "\"AppId eq '00000002-0000-0ff1-ce00-000000000000'\").Id -AppRoleId dc50a0fb-09a3-484d-be87-e023b12c6440"
)
GRANT_GRAPH_ROLES = (
    "run 'azd provision' (infra/app/permissions.bicep grants them), or grant each with "
    "New-MgServicePrincipalAppRoleAssignment on the Microsoft Graph service principal "
    "(appId 00000003-0000-0000-c000-000000000000); new grants can take up to an hour to reach the token"
)
EXCHANGE_ROLE_FIX = (
    "assign the identity the Exchange Administrator (or, with EXOPROV_EXCHANGE_ROLE=exchange-recipient-administrator, "
    "Exchange Recipient Administrator) directory role ('azd hooks run postprovision'), or with "
    "EXOPROV_EXCHANGE_ROLE=scoped run infra/hooks/exchange-rbac.ps1 and check that its role group carries this"
)


class Skipped(Exception):
    """A check that does not apply to this configuration."""


class CheckFailed(Exception):
    """A failed check: what is wrong and what fixes it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.fix = fix


@dataclass(frozen=True)
class DoctorCheck:
    """One line of the report: its name, the method that runs it, and the checks that must pass first."""

    name: str
    run: Callable[[Doctor], str]
    needs: tuple[str, ...] = ()


def run_doctor(out: TextIO) -> int:
    """Run every check; exit code 0 when all pass, 1 otherwise."""
    return Doctor(out).run(CHECKS)


class Doctor:
    """The checks, one method each; what several of them use is built once, by the first that needs it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failures = 0

    def run(self, checks: Sequence[DoctorCheck]) -> int:
        """Run the checks in order, each only if the checks it needs passed; print a summary; the exit code."""
        passed: dict[str, bool] = {}  # a check that did not run is absent, so what needs it does not run either
        for check in checks:
            if all(passed.get(need, False) for need in check.needs):
                passed[check.name] = self._run(check)
        self.out.write("all checks passed\n" if self.failures == 0 else f"{self.failures} check(s) failed\n")
        return 0 if self.failures == 0 else 1

    def _run(self, check: DoctorCheck) -> bool:
        """Print the check's line (and its fix when it fails); True when it passed or did not apply."""
        try:
            detail = check.run(self)
        except Skipped as exc:
            self._line("skip", check.name, str(exc))
            return True
        except CheckFailed as exc:
            self._line("FAIL", check.name, str(exc))
            self.out.write(f"       fix: {exc.fix}\n")
            self.failures += 1
            return False
        self._line("ok", check.name, detail)
        return True

    def _line(self, status: str, name: str, detail: str) -> None:
        self.out.write(f"{status:>4}  {name:<24}{detail}\n")
        self.out.flush()

    # -- what the checks share, built on first use ----------------------------------------------------------

    @cached_property
    def settings(self) -> Settings:
        """The settings from the environment, with HTTP retries cut short."""
        settings = Settings.from_env()
        # The doctor should answer in seconds, not retry an unreachable endpoint for minutes.
        return dataclasses.replace(
            settings,
            http_max_attempts=2,
            http_backoff_seconds=0.2,
            http_read_timeout_seconds=min(settings.http_read_timeout_seconds, 30),
        )

    @cached_property
    def clients(self) -> Clients:
        """The identity's credential and the service clients (each built when first asked for)."""
        return Clients.from_settings(self.settings)

    @cached_property
    def exchange_token(self) -> Token:
        return self.clients.tokens.get(self.settings.exchange_resource)

    # -- the checks, in the order of CHECKS -----------------------------------------------------------------

    def check_settings(self) -> str:
        try:
            settings = self.settings
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "correct the setting(s) named above; see README 'Settings'") from exc
        try:
            _ = self.clients  # builds the credential, which refuses an incomplete certificate setup
        except ExoprovError as exc:
            raise CheckFailed(
                str(exc), "correct the setting named above; see README 'Identity and permissions'"
            ) from exc
        return f"cloud {settings.cloud.name}, mode {settings.enforce_mode}, exchange {settings.exchange_endpoint}"

    def check_exchange_token(self) -> str:
        try:
            token = self.exchange_token
        except ExoprovError as exc:
            raise CheckFailed(
                str(exc),
                "see the message above; 'az login' on a laptop, a managed "
                "identity in Azure, AZURE_CLIENT_CERTIFICATE_PATH on a job server",
            ) from exc
        return f"acquired for {self.settings.exchange_resource}, tenant {token.tenant_id or 'unknown'}"

    def check_exchange_role(self) -> str:
        roles = self.exchange_token.roles
        if ROLE not in roles:
            raise CheckFailed(f"the token's roles are [{', '.join(roles)}], without {ROLE}", GRANT_EXCHANGE_ROLE)
        return f"{ROLE} present"

    def check_exchange_admin_api(self) -> str:
        try:
            exchange = self.clients.exchange()
            default = read_tenant_default(exchange)
            # One page of one mailbox, never the whole tenant: invoke() would follow every nextLink.
            exchange.first_page(Command("Get-Mailbox", {}, ("UserPrincipalName",)), page_size=1)
        except ServiceUnavailableError as exc:
            raise CheckFailed(
                str(exc),
                f"check EXCHANGE_ENDPOINT (now {self.settings.exchange_endpoint}); "
                "unset it to use the cloud's own endpoint",
            ) from exc
        except PermissionDeniedError as exc:
            raise CheckFailed(
                str(exc),
                "assign the identity the Exchange Administrator role, or a role "
                "group with Mail Recipients (README 'Identity and permissions')",
            ) from exc
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "see the message above") from exc
        state_text = {True: "on", False: "off", None: "not reported"}[default]
        return f"Get-OrganizationConfig and Get-Mailbox answer; tenant default cloud management {state_text}"

    def check_write_cmdlets(self) -> str:
        # A Set-Mailbox on an identity that cannot exist changes nothing: "not found" proves the cmdlet
        # and parameter are within the identity's Exchange role, a 403 or unknown parameter proves not.
        exchange = self.clients.exchange()
        probe = str(uuid.uuid4())
        for parameters in ({"IsExchangeCloudManaged": True}, {"Type": "Shared"}):
            name = next(iter(parameters))
            try:
                exchange.invoke(Command("Set-Mailbox", {"Identity": probe, **parameters}))
            except NotFoundError:
                continue
            except ExoprovError as exc:
                raise CheckFailed(f"Set-Mailbox -{name} is not allowed: {exc}", EXCHANGE_ROLE_FIX) from exc
        return "Set-Mailbox -IsExchangeCloudManaged and -Type are allowed (probed on a non-existent mailbox)"

    def check_exclusions(self) -> str:
        # Each entry must name an object the sweep lists, or what it was meant to protect is changed like any other.
        entries = sorted(self.settings.enforce_exclude)
        if not entries:
            raise Skipped("ENFORCE_EXCLUDE is empty")
        objects = self.settings.enforce_objects
        unmatched = self._unmatched_mailboxes(entries) if "mailboxes" in objects else entries
        kinds = [name for name in objects if name != "mailboxes"]
        if unmatched and kinds:
            from shared.authority.objects import KINDS
            from shared.authority.read import listed_keys

            try:
                known = set().union(*(listed_keys(self.clients.directory(), KINDS[name]) for name in kinds))
            except ExoprovError as exc:
                raise CheckFailed(f"could not list the synced {' and '.join(kinds)}: {exc}", GRANT_GRAPH_ROLES) from exc
            unmatched = [entry for entry in unmatched if entry not in known]
        what = " or ".join(["a mailbox" if k == "mailboxes" else f"a synced {k[:-1]}" for k in objects])
        if unmatched:
            raise CheckFailed(
                f"ENFORCE_EXCLUDE entries that name no {what.removeprefix('a ')}: {', '.join(unmatched)}",
                "correct them (a UPN, any SMTP address, the object id, or name: and a group's or contact's display "
                "name) or remove them; the objects they were meant for are not protected",
            )
        if len(entries) == 1:
            return f"the ENFORCE_EXCLUDE entry names {what}"
        return f"all {len(entries)} ENFORCE_EXCLUDE entries name {what}"

    def _unmatched_mailboxes(self, entries: list[str]) -> list[str]:
        """The entries no mailbox answers to (display-name entries never name a mailbox)."""
        exchange = self.clients.exchange()
        unmatched = [e for e in entries if e.startswith(NAME_PREFIX)]
        lookups = [e for e in entries if not e.startswith(NAME_PREFIX)]
        for start in range(0, len(lookups), BATCH_LIMIT):
            chunk = lookups[start : start + BATCH_LIMIT]
            commands = [Command("Get-Mailbox", {"Identity": e}, ("ExternalDirectoryObjectId",)) for e in chunk]
            for entry, item in zip(chunk, exchange.batch(commands), strict=True):
                if isinstance(item.error, NotFoundError):
                    unmatched.append(entry)
                elif item.error is not None:
                    raise CheckFailed(f"could not look up {entry}: {item.error}", "see the message above")
        return sorted(unmatched)

    def check_graph_token(self) -> str:
        try:
            token = self.clients.tokens.get(self.settings.graph_resource)
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "see the message above") from exc
        needed = [
            *GRAPH_APP_ROLES,
            *(AUTHORITY_ROLES[k] for k in self.settings.enforce_objects if k in AUTHORITY_ROLES),
        ]
        missing = [role for role in needed if role not in token.roles]
        if missing:
            fix = GRANT_GRAPH_ROLES
            if set(missing) & set(AUTHORITY_ROLES.values()):
                fix += (
                    f"; ENFORCE_OBJECTS={','.join(self.settings.enforce_objects)} needs the source-of-authority "
                    "role of each kind: deploy with the same ENFORCE_OBJECTS (azd env set ENFORCE_OBJECTS ...; azd "
                    "provision) or grant it by hand"
                )
            raise CheckFailed(f"the Graph token lacks {', '.join(missing)}", fix)
        return f"roles {', '.join(needed)} present"

    def check_graph_api(self) -> str:
        try:
            skus = self.clients.graph().skus()
        except ServiceUnavailableError as exc:
            raise CheckFailed(str(exc), f"check GRAPH_ENDPOINT (now {self.settings.graph_endpoint})") from exc
        except ExoprovError as exc:
            raise CheckFailed(str(exc), GRANT_GRAPH_ROLES) from exc
        allowed = self.settings.allowed_licenses
        known = {s.part_number.upper(): s for s in skus} | {s.sku_id: s for s in skus}
        missing = [license for license in allowed if license not in known]
        if missing:
            raise CheckFailed(
                f"ALLOWED_LICENSES names {', '.join(missing)}, which the tenant has no subscription for",
                "correct ALLOWED_LICENSES (SKU part numbers as in Graph's subscribedSkus)",
            )
        free = ", ".join(f"{known[lic].part_number} {known[lic].free_units} free" for lic in allowed)
        return f"subscribedSkus answers ({len(skus)} SKUs){'; ' + free if free else ''}"

    def check_storage(self) -> str:
        from shared.queues import (
            CHAIN_QUEUES,
            JOURNAL_CONTAINER,
            LEDGER_CONTAINER,
            POISON_QUEUES,
            REPORTS_CONTAINER,
            RESULTS,
            UNREADABLE,
        )

        settings = self.settings
        if not (settings.storage or settings.storage_queue_service_uri):
            raise Skipped("AzureWebJobsStorage is not set (only the provisioning chain needs it)")
        try:
            storage = self.clients.storage()
            for name in (*CHAIN_QUEUES, *POISON_QUEUES, RESULTS, UNREADABLE):
                storage.queue(name).peek_messages(max_messages=1)
            storage.ledger_container.get_container_properties()
            storage.journal_container.get_container_properties()
            storage.reports_container.get_container_properties()
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "set AzureWebJobsStorage (README 'Settings')") from exc
        except Exception as exc:  # the storage SDK's errors carry the service's own reason
            from shared.queues import storage_failure

            raise CheckFailed(
                str(storage_failure(exc, settings)),
                "'azd provision' creates the queues and the ledger, journal and reports containers and grants Storage "
                "Queue Data Contributor and Storage Blob Data Owner; locally, 'exoprov worker' creates them in Azurite",
            ) from exc
        return (
            f"{len(CHAIN_QUEUES) * 2 + 2} queues and the {LEDGER_CONTAINER}, {JOURNAL_CONTAINER} and "
            f"{REPORTS_CONTAINER} containers answer"
        )


# The report's lines in order. "exchange token" is where the identity proves it can get a token at all: the
# Graph token and storage (by the same identity in Azure) would fail with the same cause, so they need it.
# The Exchange role and the Graph token are needed by nothing: the API checks after them say what the
# missing role breaks (or that the API answers anyway, as subscribedSkus does to a higher role such as
# Organization.Read.All that an older deployment granted instead of LicenseAssignment.Read.All).
CHECKS: tuple[DoctorCheck, ...] = (
    DoctorCheck("settings", Doctor.check_settings),
    DoctorCheck("exchange token", Doctor.check_exchange_token, needs=("settings",)),
    DoctorCheck("exchange role", Doctor.check_exchange_role, needs=("exchange token",)),
    DoctorCheck("exchange admin api", Doctor.check_exchange_admin_api, needs=("exchange token",)),
    DoctorCheck("exchange write cmdlets", Doctor.check_write_cmdlets, needs=("exchange admin api",)),
    DoctorCheck("exclusions", Doctor.check_exclusions, needs=("exchange admin api",)),
    DoctorCheck("graph token", Doctor.check_graph_token, needs=("exchange token",)),
    DoctorCheck("graph api", Doctor.check_graph_api, needs=("exchange token",)),
    DoctorCheck("storage", Doctor.check_storage, needs=("exchange token",)),
)
