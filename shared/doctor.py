"""`exoprov doctor`: preflight checks, one line each, with the fix when one fails."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from shared.auth import Token
from shared.enforcement import read_tenant_default
from shared.errors import ExoprovError, NotFoundError, PermissionDeniedError, ServiceUnavailableError
from shared.exchange import BATCH_LIMIT, ROLE, Command
from shared.settings import Settings
from shared.wiring import Clients

GRANT_EXCHANGE_ROLE = (
    "grant the identity the Exchange.ManageAsApp application role: "
    "New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId <identity object id> "
    "-PrincipalId <identity object id> -ResourceId (Get-MgServicePrincipal -Filter "
    "\"AppId eq '00000002-0000-0ff1-ce00-000000000000'\").Id -AppRoleId dc50a0fb-09a3-484d-be87-e023b12c6440"
)


GRAPH_ROLES = ("User.Read.All", "User.ReadUpdate.All", "LicenseAssignment.ReadWrite.All", "Organization.Read.All")
GRANT_GRAPH_ROLES = (
    "run 'azd provision' (infra/app/permissions.bicep grants them), or grant each with "
    "New-MgServicePrincipalAppRoleAssignment on the Microsoft Graph service principal "
    "(appId 00000003-0000-0000-c000-000000000000); new grants can take up to an hour to reach the token"
)
EXCHANGE_ROLE_FIX = (
    "assign the identity the Exchange Administrator directory role ('azd hooks run postprovision'), or with "
    "EXOPROV_EXCHANGE_ROLE=scoped run infra/hooks/exchange-rbac.ps1 and check that its role group carries this"
)


class Skipped(Exception):
    """A check that does not apply to this configuration."""


class CheckFailed(Exception):
    """A failed check: what is wrong and what fixes it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.fix = fix


@dataclass
class Doctor:
    """Runs the checks in order; a check that others depend on stops the run when it fails."""

    out: TextIO
    failures: int = 0

    def check(self, name: str, run: Callable[[], str], *, required: bool = True) -> bool:
        try:
            detail = run()
        except Skipped as exc:
            self._line("skip", name, str(exc))
            return True
        except CheckFailed as exc:
            self._line("FAIL", name, str(exc))
            self.out.write(f"       fix: {exc.fix}\n")
            self.failures += 1
            return not required
        self._line("ok", name, detail)
        return True

    def _line(self, status: str, name: str, detail: str) -> None:
        self.out.write(f"{status:>4}  {name:<24}{detail}\n")
        self.out.flush()


def run_doctor(out: TextIO) -> int:
    """Run every check; exit code 0 when all pass, 1 otherwise."""
    doctor = Doctor(out)
    state: dict[str, object] = {}

    def settings_check() -> str:
        try:
            settings = Settings.from_env()
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "correct the setting(s) named above; see README 'Settings'") from exc
        # The doctor should answer in seconds, not retry an unreachable endpoint for minutes.
        settings = dataclasses.replace(
            settings,
            http_max_attempts=2,
            http_backoff_seconds=0.2,
            http_read_timeout_seconds=min(settings.http_read_timeout_seconds, 30),
        )
        try:
            state["clients"] = Clients.from_settings(settings)
        except ExoprovError as exc:
            raise CheckFailed(
                str(exc), "correct the setting named above; see README 'Identity and permissions'"
            ) from exc
        return f"cloud {settings.cloud.name}, mode {settings.enforce_mode}, exchange {settings.exchange_endpoint}"

    def token_check() -> str:
        clients = _clients(state)
        try:
            token = clients.tokens.get(clients.settings.exchange_resource)
        except ExoprovError as exc:
            raise CheckFailed(
                str(exc),
                "see the message above; 'az login' on a laptop, a managed "
                "identity in Azure, AZURE_CLIENT_CERTIFICATE_PATH on a job server",
            ) from exc
        state["token"] = token
        return f"acquired for {clients.settings.exchange_resource}, tenant {token.tenant_id or 'unknown'}"

    def role_check() -> str:
        token = state["token"]
        assert isinstance(token, Token)
        if ROLE not in token.roles:
            raise CheckFailed(f"the token's roles are [{', '.join(token.roles)}], without {ROLE}", GRANT_EXCHANGE_ROLE)
        return f"{ROLE} present"

    def exchange_check() -> str:
        clients = _clients(state)
        try:
            exchange = clients.exchange()
            default = read_tenant_default(exchange)
            # One page of one mailbox, never the whole tenant: invoke() would follow every nextLink.
            exchange.first_page(Command("Get-Mailbox", {}, ("UserPrincipalName",)), page_size=1)
        except ServiceUnavailableError as exc:
            raise CheckFailed(
                str(exc),
                f"check EXCHANGE_ENDPOINT (now {clients.settings.exchange_endpoint}); "
                "unset it to use the cloud's own endpoint",
            ) from exc
        except PermissionDeniedError as exc:
            raise CheckFailed(
                str(exc),
                "assign the identity the Exchange Administrator role, or a role "
                "group with Mail Recipients (README 'Permissions')",
            ) from exc
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "see the message above") from exc
        state_text = {True: "on", False: "off", None: "not reported"}[default]
        return f"Get-OrganizationConfig and Get-Mailbox answer; tenant default cloud management {state_text}"

    def write_cmdlets_check() -> str:
        # A Set-Mailbox on an identity that cannot exist changes nothing: "not found" proves the cmdlet
        # and parameter are within the identity's Exchange role, a 403 or unknown parameter proves not.
        exchange = _clients(state).exchange()
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

    def exclusions_check() -> str:
        # Each entry must name a mailbox, or the mailbox it was meant to protect is flipped like any other.
        clients = _clients(state)
        entries = sorted(clients.settings.enforce_exclude)
        if not entries:
            raise Skipped("ENFORCE_EXCLUDE is empty")
        exchange = clients.exchange()
        unmatched = []
        for start in range(0, len(entries), BATCH_LIMIT):
            chunk = entries[start : start + BATCH_LIMIT]
            commands = [Command("Get-Mailbox", {"Identity": e}, ("ExternalDirectoryObjectId",)) for e in chunk]
            for entry, outcome in zip(chunk, exchange.batch(commands), strict=True):
                if isinstance(outcome.error, NotFoundError):
                    unmatched.append(entry)
                elif outcome.error is not None:
                    raise CheckFailed(f"could not look up {entry}: {outcome.error}", "see the message above")
        if unmatched:
            raise CheckFailed(
                f"ENFORCE_EXCLUDE entries that name no mailbox: {', '.join(unmatched)}",
                "correct them (a UPN, any SMTP address of the mailbox, or its ExternalDirectoryObjectId) or remove "
                "them; the mailboxes they were meant for are not protected",
            )
        if len(entries) == 1:
            return "the ENFORCE_EXCLUDE entry names a mailbox"
        return f"all {len(entries)} ENFORCE_EXCLUDE entries name a mailbox"

    def graph_token_check() -> str:
        clients = _clients(state)
        try:
            token = clients.tokens.get(clients.settings.graph_resource)
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "see the message above") from exc
        missing = [role for role in GRAPH_ROLES if role not in token.roles]
        if missing:
            raise CheckFailed(f"the Graph token lacks {', '.join(missing)}", GRANT_GRAPH_ROLES)
        return f"roles {', '.join(GRAPH_ROLES)} present"

    def graph_check() -> str:
        clients = _clients(state)
        try:
            skus = clients.graph().skus()
        except ServiceUnavailableError as exc:
            raise CheckFailed(str(exc), f"check GRAPH_ENDPOINT (now {clients.settings.graph_endpoint})") from exc
        except ExoprovError as exc:
            raise CheckFailed(str(exc), GRANT_GRAPH_ROLES) from exc
        allowed = clients.settings.allowed_licenses
        known = {s.part_number.upper(): s for s in skus} | {s.sku_id: s for s in skus}
        missing = [license for license in allowed if license not in known]
        if missing:
            raise CheckFailed(
                f"ALLOWED_LICENSES names {', '.join(missing)}, which the tenant has no subscription for",
                "correct ALLOWED_LICENSES (SKU part numbers as in Graph's subscribedSkus)",
            )
        free = ", ".join(f"{known[lic].part_number} {known[lic].free_units} free" for lic in allowed)
        return f"subscribedSkus answers ({len(skus)} SKUs){'; ' + free if free else ''}"

    def storage_check() -> str:
        from shared.queues import CHAIN_QUEUES, JOURNAL_CONTAINER, LEDGER_CONTAINER, POISON_QUEUES, RESULTS, UNREADABLE

        settings = _clients(state).settings
        if not (settings.storage or settings.storage_queue_service_uri):
            raise Skipped("AzureWebJobsStorage is not set (only the provisioning chain needs it)")
        try:
            storage = _clients(state).storage()
            for name in (*CHAIN_QUEUES, *POISON_QUEUES, RESULTS, UNREADABLE):
                storage.queue(name).peek_messages(max_messages=1)
            storage.ledger_container.get_container_properties()
            storage.journal_container.get_container_properties()
        except ExoprovError as exc:
            raise CheckFailed(str(exc), "set AzureWebJobsStorage (README 'Settings')") from exc
        except Exception as exc:  # the storage SDK's errors carry the service's own reason
            from shared.queues import storage_failure

            raise CheckFailed(
                str(storage_failure(exc, settings)),
                "'azd provision' creates the queues and the ledger and journal containers and grants Storage Queue "
                "Data Contributor and Storage Blob Data Owner; locally, 'exoprov worker' creates them in Azurite",
            ) from exc
        return (
            f"{len(CHAIN_QUEUES) * 2 + 2} queues and the {LEDGER_CONTAINER} and {JOURNAL_CONTAINER} containers answer"
        )

    if doctor.check("settings", settings_check) and doctor.check("exchange token", token_check):
        doctor.check("exchange role", role_check, required=False)
        if doctor.check("exchange admin api", exchange_check):
            doctor.check("exchange write cmdlets", write_cmdlets_check)
            doctor.check("exclusions", exclusions_check)
        if doctor.check("graph token", graph_token_check, required=False):
            doctor.check("graph api", graph_check)
        doctor.check("storage", storage_check)
    out.write("all checks passed\n" if doctor.failures == 0 else f"{doctor.failures} check(s) failed\n")
    return 0 if doctor.failures == 0 else 1


def _clients(state: dict[str, object]) -> Clients:
    clients = state["clients"]
    assert isinstance(clients, Clients)
    return clients
