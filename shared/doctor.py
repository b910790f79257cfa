"""`exoprov doctor`: preflight checks, one line each, with the fix when one fails."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from shared.auth import Token
from shared.enforcement import read_tenant_default
from shared.errors import ExoprovError, PermissionDeniedError, ServiceUnavailableError
from shared.exchange import ROLE, Command
from shared.settings import Settings
from shared.wiring import Clients

GRANT_EXCHANGE_ROLE = (
    "grant the identity the Exchange.ManageAsApp application role: "
    "New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId <identity object id> "
    "-PrincipalId <identity object id> -ResourceId (Get-MgServicePrincipal -Filter "
    "\"AppId eq '00000002-0000-0ff1-ce00-000000000000'\").Id -AppRoleId dc50a0fb-09a3-484d-be87-e023b12c6440"
)


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
        except CheckFailed as exc:
            self._line("FAIL", name, str(exc))
            self.out.write(f"       fix: {exc.fix}\n")
            self.failures += 1
            return not required
        self._line("ok", name, detail)
        return True

    def _line(self, status: str, name: str, detail: str) -> None:
        self.out.write(f"{status:>4}  {name:<22}{detail}\n")
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
        state["clients"] = Clients.from_settings(settings)
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
            exchange.invoke(Command("Get-Mailbox", {"ResultSize": 1}, ("UserPrincipalName",)))
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

    if doctor.check("settings", settings_check) and doctor.check("exchange token", token_check):
        doctor.check("exchange role", role_check, required=False)
        doctor.check("exchange admin api", exchange_check)
    out.write("all checks passed\n" if doctor.failures == 0 else f"{doctor.failures} check(s) failed\n")
    return 0 if doctor.failures == 0 else 1


def _clients(state: dict[str, object]) -> Clients:
    clients = state["clients"]
    assert isinstance(clients, Clients)
    return clients
