#!/bin/sh
# azd postprovision: gives the app's identity the Entra directory role that Exchange Online checks for
# app-only calls (Bicep cannot assign directory roles). Safe to run again: it assigns only what is missing.
# postprovision.ps1 is its line-for-line twin for Windows: the same steps in the same order with the same
# messages. tests/test_hooks.py runs this one against a stand-in az and holds the other to it.
#
# EXOPROV_EXCHANGE_ROLE chooses how the identity may use Exchange:
#   exchange-administrator            (default) the directory role documented to cover every cmdlet the app uses
#   exchange-recipient-administrator  recipients only; documented for app-only access. Whether it also lets the
#                                     readiness report read the hybrid configuration is not: 'exoprov doctor' tells
#   scoped                            no directory role; an Exchange admin runs infra/hooks/exchange-rbac.ps1
#                                     (a role group whose write scope is dir-synced recipients)
#   none                              assign nothing (you manage it yourself)
# For a deployer without Entra rights, 'azd env set EXOPROV_SKIP_GRANTS true': main.bicep then grants no app
# role and outputs EXOPROV_GRANTS_SKIPPED=true, and this hook calls nothing and prints the commands an Entra
# administrator runs afterwards, the directory role and the Graph and Exchange app roles.
set -eu

say() { printf '%s\n' "$1"; }
warn() { printf '%s\n' "$1" >&2; }
fail() { printf '%s\n' "$1" >&2; exit 1; }
# Ids go into request files and printed commands: accept nothing but a GUID.
# The length first: grep matches line by line, so a value of several lines could hide a GUID among them.
is_guid() { [ "${#1}" -eq 36 ] && printf '%s' "$1" | grep -Eq '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'; }

# Template ids from Learn, "Microsoft Entra built-in roles". A built-in role's definition id is its template
# id in every tenant, so there is no lookup by display name (which is what broke first on Windows).
exchange_administrator=29232cdf-9323-42fd-ade2-1d097af3e4de
exchange_recipient_administrator=31392ffb-586c-42d1-9346-e59415a2cc4e
# What infra/app/permissions.bicep grants (GRAPH_APP_ROLES in shared/auth.py; tests/test_hooks.py keeps them
# equal), for the commands printed when the deployment was told to grant nothing.
graph_roles="'User.Read.All','User.ReadUpdate.All','LicenseAssignment.ReadWrite.All','LicenseAssignment.Read.All','GroupMember.Read.All','OrgContact.Read.All'"
# The source-of-authority role of each kind ENFORCE_OBJECTS lists (AUTHORITY_ROLES), as permissions.bicep adds it.
objects=",$(printf '%s' "${ENFORCE_OBJECTS:-mailboxes}" | tr -d ' ' | tr '[:upper:]' '[:lower:]'),"
case "$objects" in *,groups,*) graph_roles="$graph_roles,'Group-OnPremisesSyncBehavior.ReadWrite.All'" ;; esac
case "$objects" in *,contacts,*) graph_roles="$graph_roles,'Contacts-OnPremisesSyncBehavior.ReadWrite.All'" ;; esac
graph_app=00000003-0000-0000-c000-000000000000
exchange_app=00000002-0000-0ff1-ce00-000000000000
exchange_manage_as_app=dc50a0fb-09a3-484d-be87-e023b12c6440
graph=https://graph.microsoft.com/v1.0/roleManagement/directory

mode="${EXOPROV_EXCHANGE_ROLE:-exchange-administrator}"
principal="${EXOPROV_IDENTITY_PRINCIPAL_ID:-}"
client_id="${EXOPROV_IDENTITY_CLIENT_ID:-<client id>}"
tenant="${AZURE_TENANT_ID:-}"
skip="${EXOPROV_GRANTS_SKIPPED:-false}"

if ! is_guid "$principal"; then
  fail "postprovision: EXOPROV_IDENTITY_PRINCIPAL_ID='$principal' is not an object id; 'azd provision' sets it from the deployment outputs, so run this as 'azd hooks run postprovision'."
fi
case "$mode" in
  exchange-administrator) role_name="Exchange Administrator"; role_id="$exchange_administrator" ;;
  exchange-recipient-administrator) role_name="Exchange Recipient Administrator"; role_id="$exchange_recipient_administrator" ;;
  scoped | none) role_name=""; role_id="" ;;
  *) fail "postprovision: EXOPROV_EXCHANGE_ROLE='$mode' is not one of exchange-administrator, exchange-recipient-administrator, scoped, none." ;;
esac
case "$skip" in
  true | True | TRUE | 1) skip=true ;;
  false | False | FALSE | 0) skip=false ;;
  *) fail "postprovision: EXOPROV_GRANTS_SKIPPED='$skip' is neither true nor false." ;;
esac
# The deployment's tenant: main.bicep's AZURE_TENANT_ID output, which azd hands to every hook.
if [ -n "$role_id" ] || [ "$skip" = true ]; then
  if ! is_guid "$tenant"; then
    fail "postprovision: AZURE_TENANT_ID='$tenant' is not a tenant id; 'azd provision' sets it from the deployment outputs, so run this as 'azd hooks run postprovision'."
  fi
fi

if [ "$mode" = scoped ]; then
  say "postprovision: EXOPROV_EXCHANGE_ROLE=scoped, so no directory role is assigned."
  say "  An Exchange administrator now runs, in PowerShell 7 with the ExchangeOnlineManagement module:"
  say "  ./infra/hooks/exchange-rbac.ps1 -AppId $client_id -ObjectId $principal"
fi
if [ "$mode" = none ]; then
  say "postprovision: EXOPROV_EXCHANGE_ROLE=none, so no Exchange role is assigned; assign one yourself (README, 'Deploy to Azure')."
fi

# Without Entra rights the deployer can assign nothing: print what an administrator runs instead, in Graph
# PowerShell (no JSON to quote, and the same on every desk).
if [ "$skip" = true ]; then
  say "postprovision: EXOPROV_GRANTS_SKIPPED=true (azd env set EXOPROV_SKIP_GRANTS true), so neither the deployment nor this hook granted anything in Entra ID."
  say "  An Entra administrator (Privileged Role Administrator) of tenant $tenant now runs, in PowerShell 7 with the Microsoft.Graph module:"
  say "  Connect-MgGraph -TenantId $tenant -Scopes RoleManagement.ReadWrite.Directory,AppRoleAssignment.ReadWrite.All,Application.Read.All"
  if [ -n "$role_id" ]; then
    say "  New-MgRoleManagementDirectoryRoleAssignment -PrincipalId $principal -RoleDefinitionId $role_id -DirectoryScopeId '/'"
  fi
  say "  \$graph = Get-MgServicePrincipal -Filter \"appId eq '$graph_app'\""
  say "  foreach (\$role in $graph_roles) { New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $principal -PrincipalId $principal -ResourceId \$graph.Id -AppRoleId (\$graph.AppRoles | Where-Object Value -eq \$role).Id }"
  say "  \$exchange = Get-MgServicePrincipal -Filter \"appId eq '$exchange_app'\""
  say "  New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $principal -PrincipalId $principal -ResourceId \$exchange.Id -AppRoleId $exchange_manage_as_app"
  say "  Grants can take up to an hour to reach the identity's tokens; 'exoprov doctor' (README, 'Deploy to Azure') tells when everything is in place."
  exit 0
fi
if [ -z "$role_id" ]; then
  exit 0
fi

if ! command -v az >/dev/null 2>&1; then
  fail "postprovision: the Azure CLI (az) assigns the directory role; install it, run 'az login --tenant $tenant' as a Privileged Role Administrator, then 'azd hooks run postprovision'."
fi

# azd and az sign in separately: a role assigned in the wrong tenant would leave this one without it.
if ! signed_in=$(az account show --query tenantId --output tsv); then
  fail "postprovision: checking az's tenant failed ('az account show', message above); run 'az login --tenant $tenant', then 'azd hooks run postprovision'."
fi
if [ "$signed_in" != "$tenant" ]; then
  fail "postprovision: az is signed in to tenant $signed_in, but this deployment is in tenant $tenant; run 'az login --tenant $tenant', then 'azd hooks run postprovision'."
fi

# Request bodies and filters go to az as files, never inline JSON: see postprovision.ps1 for why.
if ! work=$(mktemp -d); then
  fail "postprovision: could not create a temporary directory for the request files."
fi
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT  # dash runs the EXIT trap on exit, not when a signal ends the script
trap 'exit 143' TERM
printf '{"%s": "principalId eq %s and roleDefinitionId eq %s"}\n' '$filter' "'$principal'" "'$role_id'" >"$work/filter.json"
if ! existing=$(az rest --method GET --url "$graph/roleAssignments" --uri-parameters "@$work/filter.json" --query "value[0].id" --output tsv); then
  fail "postprovision: reading the identity's directory role assignments failed ('az rest --method GET', message above); run 'az login --tenant $tenant' as a Privileged Role Administrator, then 'azd hooks run postprovision'."
fi
if [ -n "$existing" ]; then
  say "postprovision: the identity already holds '$role_name'; nothing to do."
  exit 0
fi

printf '{"principalId": "%s", "roleDefinitionId": "%s", "directoryScopeId": "/"}\n' "$principal" "$role_id" >"$work/body.json"
if ! az rest --method POST --url "$graph/roleAssignments" --headers "Content-Type=application/json" --body "@$work/body.json" --output none; then
  warn "postprovision: assigning '$role_name' failed ('az rest --method POST', message above)."
  warn "  Without Entra rights, an Entra administrator (Privileged Role Administrator) of tenant $tenant runs, in PowerShell 7 with the Microsoft.Graph module:"
  warn "  Connect-MgGraph -TenantId $tenant -Scopes RoleManagement.ReadWrite.Directory"
  warn "  New-MgRoleManagementDirectoryRoleAssignment -PrincipalId $principal -RoleDefinitionId $role_id -DirectoryScopeId '/'"
  fail "  Then 'exoprov doctor' (README, 'Deploy to Azure') tells when everything is in place."
fi
say "postprovision: assigned '$role_name' to the app's identity ($principal)."
say "  Role and app-role grants can take up to an hour to reach managed-identity tokens;"
say "  'exoprov doctor' (README, 'Deploy to Azure') tells when everything is in place."
