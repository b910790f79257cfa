# azd postprovision on Windows: the line-for-line twin of postprovision.sh (read that file for the options),
# with the same steps in the same order and the same messages; tests/test_hooks.py holds the two together.
# On Windows az is az.cmd, so cmd.exe parses every argument a second time and drops the double quotes inside
# them (azure-cli, doc/quoting-issues-with-powershell.md): request bodies and filters therefore go to az as
# @files, never inline JSON, and no argument carries a character cmd.exe treats specially. A failed native
# call does not stop a script, so every az call is followed by a $LASTEXITCODE check.
$ErrorActionPreference = 'Stop'
# PowerShell 7.3+ can turn a native command's failure into an exception; keep it off so that each az failure
# reaches its own check below and is reported with the step that failed.
$PSNativeCommandUseErrorActionPreference = $false

function say([string] $text) { Write-Host $text }
function warn([string] $text) { [Console]::Error.WriteLine($text) }
function fail([string] $text) {
  [Console]::Error.WriteLine($text)
  if ($script:work) { Remove-Item -LiteralPath $script:work -Recurse -Force -ErrorAction SilentlyContinue }
  exit 1
}
# Ids go into request files and printed commands: accept nothing but a GUID.
function is_guid([string] $value) { return $value -match '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' }

# Template ids from Learn, "Microsoft Entra built-in roles". A built-in role's definition id is its template
# id in every tenant, so there is no lookup by display name (which is what broke first on Windows).
$exchange_administrator = '29232cdf-9323-42fd-ade2-1d097af3e4de'
$exchange_recipient_administrator = '31392ffb-586c-42d1-9346-e59415a2cc4e'
# What infra/app/permissions.bicep grants (GRAPH_APP_ROLES in shared/auth.py; tests/test_hooks.py keeps them
# equal), for the commands printed when the deployment was told to grant nothing.
$graph_roles = "'User.Read.All','User.ReadUpdate.All','LicenseAssignment.ReadWrite.All','LicenseAssignment.Read.All','GroupMember.Read.All','OrgContact.Read.All'"
# The source-of-authority role of each kind ENFORCE_OBJECTS lists (AUTHORITY_ROLES), as permissions.bicep adds it.
$objects = if ($env:ENFORCE_OBJECTS) { $env:ENFORCE_OBJECTS } else { 'mailboxes' }
$objects = ",$($objects.Replace(' ', '').ToLower()),"
if ($objects.Contains(',groups,')) { $graph_roles += ",'Group-OnPremisesSyncBehavior.ReadWrite.All'" }
if ($objects.Contains(',contacts,')) { $graph_roles += ",'Contacts-OnPremisesSyncBehavior.ReadWrite.All'" }
$graph_app = '00000003-0000-0000-c000-000000000000'
$exchange_app = '00000002-0000-0ff1-ce00-000000000000'
$exchange_manage_as_app = 'dc50a0fb-09a3-484d-be87-e023b12c6440'
$graph = 'https://graph.microsoft.com/v1.0/roleManagement/directory'

$mode = if ($env:EXOPROV_EXCHANGE_ROLE) { $env:EXOPROV_EXCHANGE_ROLE } else { 'exchange-administrator' }
$principal = if ($env:EXOPROV_IDENTITY_PRINCIPAL_ID) { $env:EXOPROV_IDENTITY_PRINCIPAL_ID } else { '' }
$client_id = if ($env:EXOPROV_IDENTITY_CLIENT_ID) { $env:EXOPROV_IDENTITY_CLIENT_ID } else { '<client id>' }
$tenant = if ($env:AZURE_TENANT_ID) { $env:AZURE_TENANT_ID } else { '' }
$skip = if ($env:EXOPROV_GRANTS_SKIPPED) { $env:EXOPROV_GRANTS_SKIPPED } else { 'false' }

if (-not (is_guid $principal)) {
  fail "postprovision: EXOPROV_IDENTITY_PRINCIPAL_ID='$principal' is not an object id; 'azd provision' sets it from the deployment outputs, so run this as 'azd hooks run postprovision'."
}
switch -CaseSensitive ($mode) {
  'exchange-administrator' { $role_name = 'Exchange Administrator'; $role_id = $exchange_administrator }
  'exchange-recipient-administrator' { $role_name = 'Exchange Recipient Administrator'; $role_id = $exchange_recipient_administrator }
  { $_ -cin 'scoped', 'none' } { $role_name = ''; $role_id = '' }
  default { fail "postprovision: EXOPROV_EXCHANGE_ROLE='$mode' is not one of exchange-administrator, exchange-recipient-administrator, scoped, none." }
}
switch -CaseSensitive ($skip) {
  { $_ -cin 'true', 'True', 'TRUE', '1' } { $skip = 'true' }
  { $_ -cin 'false', 'False', 'FALSE', '0' } { $skip = 'false' }
  default { fail "postprovision: EXOPROV_GRANTS_SKIPPED='$skip' is neither true nor false." }
}
# The deployment's tenant: main.bicep's AZURE_TENANT_ID output, which azd hands to every hook.
if ($role_id -or $skip -ceq 'true') {
  if (-not (is_guid $tenant)) {
    fail "postprovision: AZURE_TENANT_ID='$tenant' is not a tenant id; 'azd provision' sets it from the deployment outputs, so run this as 'azd hooks run postprovision'."
  }
}

if ($mode -ceq 'scoped') {
  say "postprovision: EXOPROV_EXCHANGE_ROLE=scoped, so no directory role is assigned."
  say "  An Exchange administrator now runs, in PowerShell 7 with the ExchangeOnlineManagement module:"
  say "  ./infra/hooks/exchange-rbac.ps1 -AppId $client_id -ObjectId $principal"
}
if ($mode -ceq 'none') {
  say "postprovision: EXOPROV_EXCHANGE_ROLE=none, so no Exchange role is assigned; assign one yourself (README, 'Deploy to Azure')."
}

# Without Entra rights the deployer can assign nothing: print what an administrator runs instead, in Graph
# PowerShell (no JSON to quote, and the same on every desk).
if ($skip -ceq 'true') {
  say "postprovision: EXOPROV_GRANTS_SKIPPED=true (azd env set EXOPROV_SKIP_GRANTS true), so neither the deployment nor this hook granted anything in Entra ID."
  say "  An Entra administrator (Privileged Role Administrator) of tenant $tenant now runs, in PowerShell 7 with the Microsoft.Graph module:"
  say "  Connect-MgGraph -TenantId $tenant -Scopes RoleManagement.ReadWrite.Directory,AppRoleAssignment.ReadWrite.All,Application.Read.All"
  if ($role_id) {
    say "  New-MgRoleManagementDirectoryRoleAssignment -PrincipalId $principal -RoleDefinitionId $role_id -DirectoryScopeId '/'"
  }
  say "  `$graph = Get-MgServicePrincipal -Filter `"appId eq '$graph_app'`""
  say "  foreach (`$role in $graph_roles) { New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $principal -PrincipalId $principal -ResourceId `$graph.Id -AppRoleId (`$graph.AppRoles | Where-Object Value -eq `$role).Id }"
  say "  `$exchange = Get-MgServicePrincipal -Filter `"appId eq '$exchange_app'`""
  say "  New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $principal -PrincipalId $principal -ResourceId `$exchange.Id -AppRoleId $exchange_manage_as_app"
  say "  Grants can take up to an hour to reach the identity's tokens; 'exoprov doctor' (README, 'Deploy to Azure') tells when everything is in place."
  exit 0
}
if (-not $role_id) {
  exit 0
}

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
  fail "postprovision: the Azure CLI (az) assigns the directory role; install it, run 'az login --tenant $tenant' as a Privileged Role Administrator, then 'azd hooks run postprovision'."
}

# azd and az sign in separately: a role assigned in the wrong tenant would leave this one without it.
$signed_in = az account show --query tenantId --output tsv
if ($LASTEXITCODE -ne 0) {
  fail "postprovision: checking az's tenant failed ('az account show', message above); run 'az login --tenant $tenant', then 'azd hooks run postprovision'."
}
if ("$signed_in" -cne $tenant) {
  fail "postprovision: az is signed in to tenant $signed_in, but this deployment is in tenant $tenant; run 'az login --tenant $tenant', then 'azd hooks run postprovision'."
}

# Request bodies and filters go to az as files, never inline JSON (see the top of this file). The @ is quoted:
# a bare @name would be PowerShell splatting.
try {
  $work = Join-Path ([System.IO.Path]::GetTempPath()) "exoprov-$([guid]::NewGuid())"
  New-Item -ItemType Directory -Path $work | Out-Null
} catch {
  fail "postprovision: could not create a temporary directory for the request files."
}
$filter_file = Join-Path $work 'filter.json'
@{ '$filter' = "principalId eq '$principal' and roleDefinitionId eq '$role_id'" } | ConvertTo-Json -Compress | Set-Content -LiteralPath $filter_file -Encoding utf8
$existing = az rest --method GET --url "$graph/roleAssignments" --uri-parameters "@$filter_file" --query 'value[0].id' --output tsv
if ($LASTEXITCODE -ne 0) {
  fail "postprovision: reading the identity's directory role assignments failed ('az rest --method GET', message above); run 'az login --tenant $tenant' as a Privileged Role Administrator, then 'azd hooks run postprovision'."
}
if ("$existing") {
  say "postprovision: the identity already holds '$role_name'; nothing to do."
  Remove-Item -LiteralPath $work -Recurse -Force
  exit 0
}

$body_file = Join-Path $work 'body.json'
@{ principalId = $principal; roleDefinitionId = $role_id; directoryScopeId = '/' } | ConvertTo-Json -Compress | Set-Content -LiteralPath $body_file -Encoding utf8
az rest --method POST --url "$graph/roleAssignments" --headers 'Content-Type=application/json' --body "@$body_file" --output none
if ($LASTEXITCODE -ne 0) {
  warn "postprovision: assigning '$role_name' failed ('az rest --method POST', message above)."
  warn "  Without Entra rights, an Entra administrator (Privileged Role Administrator) of tenant $tenant runs, in PowerShell 7 with the Microsoft.Graph module:"
  warn "  Connect-MgGraph -TenantId $tenant -Scopes RoleManagement.ReadWrite.Directory"
  warn "  New-MgRoleManagementDirectoryRoleAssignment -PrincipalId $principal -RoleDefinitionId $role_id -DirectoryScopeId '/'"
  fail "  Then 'exoprov doctor' (README, 'Deploy to Azure') tells when everything is in place."
}
Remove-Item -LiteralPath $work -Recurse -Force
say "postprovision: assigned '$role_name' to the app's identity ($principal)."
say "  Role and app-role grants can take up to an hour to reach managed-identity tokens;"
say "  'exoprov doctor' (README, 'Deploy to Azure') tells when everything is in place."
