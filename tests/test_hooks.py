"""The post-provision hooks. The sh hook runs against a stand-in `az` (no Azure CLI, tenant or network here);
PowerShell cannot be installed on these machines, so the ps1 hook is checked statically to be its twin: the
same az calls in the same order, a $LASTEXITCODE check after each, no inline JSON, the same messages."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.auth import AUTHORITY_ROLES, GRAPH_APP_ROLES
from tests.conftest import ROOT

HOOKS = ROOT / "infra" / "hooks"
SH = HOOKS / "postprovision.sh"
PS1 = HOOKS / "postprovision.ps1"
RBAC = HOOKS / "exchange-rbac.ps1"

PRINCIPAL = "11111111-2222-3333-4444-555555555555"
TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
# Learn, "Microsoft Entra built-in roles": template ids, which are the role definition ids of built-in roles.
EXCHANGE_ADMINISTRATOR = "29232cdf-9323-42fd-ade2-1d097af3e4de"
EXCHANGE_RECIPIENT_ADMINISTRATOR = "31392ffb-586c-42d1-9346-e59415a2cc4e"
EXCHANGE_MANAGE_AS_APP = "dc50a0fb-09a3-484d-be87-e023b12c6440"

# A stand-in `az`: records each call (and the content of every @file argument, which the hook deletes
# afterwards), then answers from the scenario in FAKE_AZ_SCENARIO, or fails the call named by its "fail".
FAKE_AZ = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
files = {{a: open(a[1:], encoding="utf-8").read() for a in args if a.startswith("@")}}
with open(os.environ["FAKE_AZ_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({{"args": args, "files": files}}) + "\\n")
scenario = json.loads(os.environ["FAKE_AZ_SCENARIO"])
if scenario.get("fail") and scenario["fail"] in " ".join(args):
    sys.stderr.write("ERROR: Forbidden (stand-in)\\n")
    sys.exit(1)
if args[:2] == ["account", "show"]:
    print(scenario.get("tenant", ""))
elif args[:1] == ["rest"] and "GET" in args:
    print(scenario.get("existing", ""))
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]

    def az(self, *prefix: str) -> list[dict[str, Any]]:
        """The recorded az calls whose arguments start with prefix."""
        return [c for c in self.calls if c["args"][: len(prefix)] == list(prefix)]

    def rest(self, method: str) -> list[dict[str, Any]]:
        return [c for c in self.az("rest") if method in c["args"]]


RunHook = Callable[..., Run]


@pytest.fixture
def run_hook(tmp_path: Path) -> RunHook:
    """Runs postprovision.sh with the stand-in az first on PATH and the azd environment given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(az.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "az.log"

    def run(scenario: dict[str, str] | None = None, **env: str) -> Run:
        log.unlink(missing_ok=True)
        base = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_AZ_LOG": str(log),
            "FAKE_AZ_SCENARIO": json.dumps({"tenant": TENANT, **(scenario or {})}),
            "EXOPROV_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
            "EXOPROV_IDENTITY_CLIENT_ID": "client-id-of-the-identity",
            "AZURE_TENANT_ID": TENANT,
        }
        result = subprocess.run(
            ["sh", str(SH)],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return Run(result.returncode, result.stdout, result.stderr, calls)

    return run


def test_the_hook_assigns_the_exchange_administrator_role_by_template_id(run_hook: RunHook) -> None:
    """Without the role, the hook checks az's tenant, finds no assignment and posts one at directory scope."""
    run = run_hook()
    assert run.returncode == 0, run.stderr
    assert [c["args"][:3] for c in run.calls] == [
        ["account", "show", "--query"],
        ["rest", "--method", "GET"],
        ["rest", "--method", "POST"],
    ]
    (get,) = run.rest("GET")
    (query,) = get["files"].values()
    assert json.loads(query) == {
        "$filter": f"principalId eq '{PRINCIPAL}' and roleDefinitionId eq '{EXCHANGE_ADMINISTRATOR}'"
    }
    (post,) = run.rest("POST")
    (body,) = post["files"].values()
    assert json.loads(body) == {
        "principalId": PRINCIPAL,
        "roleDefinitionId": EXCHANGE_ADMINISTRATOR,
        "directoryScopeId": "/",
    }
    assert "assigned 'Exchange Administrator'" in run.stdout


def test_the_recipient_administrator_option_assigns_that_role(run_hook: RunHook) -> None:
    """EXOPROV_EXCHANGE_ROLE=exchange-recipient-administrator assigns Exchange Recipient Administrator's template."""
    run = run_hook(EXOPROV_EXCHANGE_ROLE="exchange-recipient-administrator")
    assert run.returncode == 0, run.stderr
    (post,) = run.rest("POST")
    assert json.loads(*post["files"].values())["roleDefinitionId"] == EXCHANGE_RECIPIENT_ADMINISTRATOR
    assert "assigned 'Exchange Recipient Administrator'" in run.stdout


def test_an_existing_assignment_leaves_nothing_to_do(run_hook: RunHook) -> None:
    """With the role already assigned, the hook posts nothing and says so."""
    run = run_hook({"existing": "assignment-id"})
    assert run.returncode == 0, run.stderr
    assert "nothing to do" in run.stdout
    assert run.rest("POST") == []


def test_no_request_is_passed_to_az_as_inline_json(run_hook: RunHook) -> None:
    """Every body and filter reaches az as an @file; no argument is JSON (PowerShell would strip its quotes)."""
    run = run_hook()
    arguments = [a for c in run.calls for a in c["args"]]
    assert not [a for a in arguments if a.lstrip().startswith(("{", "["))]
    for call in run.az("rest"):
        args = call["args"]
        for option in ("--body", "--uri-parameters"):
            if option in args:
                assert args[args.index(option) + 1].startswith("@")


@pytest.mark.parametrize(
    ("failing", "step"),
    [
        ("account show", "checking az's tenant failed"),
        ("--method GET", "reading the identity's directory role assignments failed"),
        ("--method POST", "assigning 'Exchange Administrator' failed"),
    ],
)
def test_a_failing_az_call_stops_the_hook_naming_the_step(run_hook: RunHook, failing: str, step: str) -> None:
    """When az exits 1, the hook exits non-zero, names the step that failed and never claims success."""
    run = run_hook({"fail": failing})
    assert run.returncode != 0
    assert step in run.stderr
    assert "assigned" not in run.stdout and "nothing to do" not in run.stdout
    later = {"account show": ["GET", "POST"], "--method GET": ["POST"], "--method POST": []}[failing]
    for method in later:
        assert run.rest(method) == []


def test_a_failed_assignment_prints_the_command_an_entra_administrator_runs(run_hook: RunHook) -> None:
    """A deployer the POST refuses is told the Graph PowerShell command that assigns the role instead."""
    run = run_hook({"fail": "--method POST"})
    assert f"Connect-MgGraph -TenantId {TENANT}" in run.stderr
    assert (
        f"New-MgRoleManagementDirectoryRoleAssignment -PrincipalId {PRINCIPAL} -RoleDefinitionId "
        f"{EXCHANGE_ADMINISTRATOR} -DirectoryScopeId '/'"
    ) in run.stderr


def test_a_wrong_tenant_stops_before_any_role_call(run_hook: RunHook) -> None:
    """az signed in elsewhere: the hook names both tenants and the fix, and makes no Graph call."""
    run = run_hook({"tenant": OTHER_TENANT})
    assert run.returncode != 0
    assert OTHER_TENANT in run.stderr and TENANT in run.stderr
    assert f"az login --tenant {TENANT}" in run.stderr
    assert run.az("rest") == [] and len(run.az("account", "show")) == 1
    assert "assigned" not in run.stdout


def test_a_missing_deployment_tenant_stops_before_calling_az(run_hook: RunHook) -> None:
    """Without AZURE_TENANT_ID (not run through azd) there is nothing to compare against: no az call at all."""
    run = run_hook(AZURE_TENANT_ID="")
    assert run.returncode != 0 and "AZURE_TENANT_ID" in run.stderr
    assert run.calls == []


def test_the_scoped_option_calls_nothing_and_prints_the_rbac_script(run_hook: RunHook) -> None:
    """EXOPROV_EXCHANGE_ROLE=scoped assigns no directory role and prints exchange-rbac.ps1 with both ids."""
    run = run_hook(EXOPROV_EXCHANGE_ROLE="scoped", AZURE_TENANT_ID="")
    assert run.returncode == 0, run.stderr
    assert f"exchange-rbac.ps1 -AppId client-id-of-the-identity -ObjectId {PRINCIPAL}" in run.stdout
    assert run.calls == []


def test_an_unknown_role_option_is_refused_with_the_valid_ones(run_hook: RunHook) -> None:
    """A typo in EXOPROV_EXCHANGE_ROLE stops the hook, listing every option, before any az call."""
    run = run_hook(EXOPROV_EXCHANGE_ROLE="exchange-admin")
    assert run.returncode != 0
    for option in ("exchange-administrator", "exchange-recipient-administrator", "scoped", "none"):
        assert option in run.stderr
    assert run.calls == []


@pytest.mark.parametrize("mode", ["exchange-administrator", "exchange-recipient-administrator", "scoped"])
def test_skipping_entra_grants_prints_every_grant_for_an_administrator(run_hook: RunHook, mode: str) -> None:
    """When the deployment skipped its grants, no az is called and every grant is printed for an administrator."""
    run = run_hook(EXOPROV_GRANTS_SKIPPED="true", EXOPROV_EXCHANGE_ROLE=mode)
    assert run.returncode == 0, run.stderr
    assert run.calls == []
    out = run.stdout
    assert f"Connect-MgGraph -TenantId {TENANT} -Scopes RoleManagement.ReadWrite.Directory" in out
    role = {
        "exchange-administrator": EXCHANGE_ADMINISTRATOR,
        "exchange-recipient-administrator": EXCHANGE_RECIPIENT_ADMINISTRATOR,
    }
    if mode in role:
        assert f"-PrincipalId {PRINCIPAL} -RoleDefinitionId {role[mode]} -DirectoryScopeId '/'" in out
    else:
        assert "New-MgRoleManagementDirectoryRoleAssignment" not in out and "exchange-rbac.ps1" in out
    (loop,) = [line for line in out.splitlines() if line.strip().startswith("foreach ($role in ")]
    assert re.findall(r"'([^']+)'", loop.split(")")[0]) == list(GRAPH_APP_ROLES)
    assert "\"appId eq '00000003-0000-0000-c000-000000000000'\"" in out
    assert "\"appId eq '00000002-0000-0ff1-ce00-000000000000'\"" in out
    assert f"-AppRoleId {EXCHANGE_MANAGE_AS_APP}" in out


# --- the ps1 twin, checked statically --------------------------------------------------------------------

MESSAGE = {
    SH: re.compile(r'\b(say|warn|fail) "((?:[^"\\]|\\.)*)"'),
    PS1: re.compile(r'\b(say|warn|fail) "((?:[^"`]|`.)*)"'),
}
# An escaped $ is literal text; a bare one is a variable. Both are kept apart so that a literal in one hook
# cannot pass for a variable in the other.
UNESCAPE = {SH: re.compile(r"\\(.)"), PS1: re.compile(r"`(.)")}
AZ_CALL = re.compile(r"(?:^|[=(\s])az ((?:account|rest)\b[^)\n;]*)", re.M)


def messages(path: Path) -> list[tuple[str, str]]:
    """Each say/warn/fail message in order, with escapes resolved the same way for both shells."""
    return [
        (kind, UNESCAPE[path].sub(lambda m: "<$>" if m[1] == "$" else m[1], text))
        for kind, text in MESSAGE[path].findall(path.read_text())
    ]


def code(path: Path) -> str:
    """The hook without its comments and message strings, so that `az` in a message is not a call."""
    text = MESSAGE[path].sub("MESSAGE", path.read_text())
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def az_calls(path: Path) -> list[list[str]]:
    """Each az invocation's arguments, unquoted, with @file paths and line continuations stripped."""
    calls = []
    for match in AZ_CALL.finditer(code(path)):
        words = shlex.split(match[1].replace("\\\n", " "), posix=True)
        calls.append(["@FILE" if w.startswith("@") else w for w in words])
    return calls


def test_both_hooks_make_the_same_az_calls_in_the_same_order() -> None:
    """account show, the GET for an existing assignment, then the POST: option for option in both shells."""
    assert az_calls(SH) == az_calls(PS1)
    assert [c[:3] for c in az_calls(SH)] == [
        ["account", "show", "--query"],
        ["rest", "--method", "GET"],
        ["rest", "--method", "POST"],
    ]


def test_both_hooks_say_the_same_messages_in_the_same_order() -> None:
    """Every say, warn and fail of the sh hook is in the ps1 hook, word for word and variable for variable."""
    assert messages(SH) == messages(PS1)
    assert len(messages(SH)) > 20


def test_no_ps1_message_uses_a_variable_followed_by_a_colon() -> None:
    """PowerShell reads "$name:" as a scope-qualified variable, not a variable and a colon: none in a message."""
    for _, text in messages(PS1):
        assert not re.search(r"(?<!<)\$\w+:", text), text


@pytest.mark.parametrize(
    ("objects", "kinds"), [("Groups, contacts", ["groups", "contacts"]), ("contacts", ["contacts"])]
)
def test_the_printed_grants_add_the_source_of_authority_role_of_each_enforced_kind(
    run_hook: RunHook, objects: str, kinds: list[str]
) -> None:
    """ENFORCE_OBJECTS adds AUTHORITY_ROLES to the printed loop, as permissions.bicep adds them to its grants."""
    run = run_hook(EXOPROV_GRANTS_SKIPPED="true", ENFORCE_OBJECTS=objects)
    assert run.returncode == 0, run.stderr
    (loop,) = [line for line in run.stdout.splitlines() if line.strip().startswith("foreach ($role in ")]
    expected = [*GRAPH_APP_ROLES, *(AUTHORITY_ROLES[kind] for kind in ("groups", "contacts") if kind in kinds)]
    assert re.findall(r"'([^']+)'", loop.split(")")[0]) == expected
    for kind, role in AUTHORITY_ROLES.items():
        assert f"Contains(',{kind},')) {{ $graph_roles += \",'{role}'\" }}" in PS1.read_text()


def test_both_hooks_define_the_same_role_ids_and_app_roles() -> None:
    """The template ids, Graph role list and app ids are the same in both hooks and match GRAPH_APP_ROLES."""
    names = [
        "exchange_administrator",
        "exchange_recipient_administrator",
        "graph_roles",
        "graph_app",
        "exchange_app",
        "exchange_manage_as_app",
        "graph",
    ]
    sh = dict(re.findall(r"^(\w+)=\"?(.*?)\"?$", SH.read_text(), re.M))
    ps1 = dict(re.findall(r"^\$(\w+) = ['\"](.*)['\"]$", PS1.read_text(), re.M))
    assert {n: sh[n] for n in names} == {n: ps1[n] for n in names}
    assert sh["exchange_administrator"] == EXCHANGE_ADMINISTRATOR
    assert sh["exchange_recipient_administrator"] == EXCHANGE_RECIPIENT_ADMINISTRATOR
    assert re.findall(r"'([^']+)'", sh["graph_roles"]) == list(GRAPH_APP_ROLES)


def test_the_ps1_hook_checks_lastexitcode_after_every_az_call() -> None:
    """The statement after each az call in the ps1 hook tests $LASTEXITCODE; in the sh hook each is an `if !`."""
    lines = [line.strip() for line in code(PS1).splitlines() if line.strip()]
    calls = [i for i, line in enumerate(lines) if AZ_CALL.search(line)]
    assert len(calls) == 3
    for i in calls:
        assert lines[i + 1].startswith("if ($LASTEXITCODE -ne 0) {"), lines[i]
    sh_calls = [line.strip() for line in code(SH).splitlines() if AZ_CALL.search(line)]
    assert len(sh_calls) == 3 and all(line.startswith("if ! ") and line.endswith("; then") for line in sh_calls)


def test_the_ps1_hook_passes_no_inline_json_to_az() -> None:
    """No az argument in the ps1 hook holds a brace or ConvertTo-Json; bodies and filters are quoted @files."""
    ps1 = code(PS1)
    for match in AZ_CALL.finditer(ps1):
        assert "{" not in match[0] and "ConvertTo-Json" not in match[0], match[0]
    for option in ("--body", "--uri-parameters"):
        values = re.findall(rf"{option} (\S+)", ps1)
        assert values and all(re.fullmatch(r'"@\$\w+"', v) for v in values), values
    # Characters cmd.exe would act on a second time (quoting-issues-with-powershell): none in any az call.
    assert not [c for c in az_calls(PS1) for word in c if set(word) & set("&|<>^()")]


def test_both_hooks_offer_the_same_role_options() -> None:
    """The sh hook's case on the mode and the ps1 hook's switch on it name the same four options."""
    sh_block = re.search(r'case "\$mode" in\n(.*?)\nesac', SH.read_text(), re.S)
    ps1_block = re.search(r"switch -CaseSensitive \(\$mode\) \{\n(.*?)\n\}", PS1.read_text(), re.S)
    assert sh_block and ps1_block
    sh = {option for arm in re.findall(r"^  ([a-z][a-z| -]*)\)", sh_block[1], re.M) for option in arm.split(" | ")}
    ps1 = set(re.findall(r"'([a-z-]+)'", ps1_block[1].split("default")[0])) - {"Exchange Administrator"}
    ps1 -= {"Exchange Recipient Administrator"}
    assert sh == ps1 == {"exchange-administrator", "exchange-recipient-administrator", "scoped", "none"}


def test_the_rbac_script_finds_objects_by_exact_comparison_not_identity() -> None:
    """exchange-rbac.ps1 never looks an object up with Get-* -Identity; it lists and compares AppId and Name."""
    text = RBAC.read_text()
    assert not re.search(r"Get-(ServicePrincipal|ManagementScope|RoleGroup)\b[^\n|]*-Identity", text)
    assert 'Where-Object { "$($_.AppId)" -eq $AppId }' in text
    assert "Where-Object { $_.Name -eq $scopeName }" in text
    assert "Where-Object { $_.Name -eq $Name }" in text
    assert re.search(r"Get-RoleGroupMember -Identity \$groupId\b", text)


def test_azd_runs_the_twin_hooks_on_their_shells() -> None:
    """azure.yaml runs the sh hook with sh on POSIX and the ps1 hook with pwsh on Windows, stopping on failure."""
    text = (ROOT / "azure.yaml").read_text()
    posix = text[text.index("posix:") : text.index("windows:")]
    windows = text[text.index("windows:") :]
    assert "shell: sh" in posix and "run: ./infra/hooks/postprovision.sh" in posix
    assert "shell: pwsh" in windows and "run: ./infra/hooks/postprovision.ps1" in windows
    assert text.count("continueOnError: false") == 2


def test_the_readme_shows_the_commands_the_hooks_print() -> None:
    """README 'Deploy to Azure' shows the printed grants with the hooks' Graph roles, role ids and options."""
    sections = re.split(r"^## ", (ROOT / "README.md").read_text(), flags=re.M)
    (deploy,) = [s for s in sections if s.startswith("Deploy to Azure\n")]
    sh = dict(re.findall(r"^(\w+)=\"?(.*?)\"?$", SH.read_text(), re.M))
    assert f"foreach ($role in {sh['graph_roles']})" in deploy
    for name in ("exchange_administrator", "exchange_recipient_administrator", "exchange_manage_as_app"):
        assert sh[name] in deploy, name
    for option in ("exchange-administrator", "exchange-recipient-administrator", "scoped", "none"):
        assert f"`{option}`" in deploy, option
    assert "azd env set EXOPROV_SKIP_GRANTS true" in deploy
