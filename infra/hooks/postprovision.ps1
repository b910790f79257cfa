# azd postprovision on Windows: the same as postprovision.sh (read that file for the options).
$ErrorActionPreference = 'Stop'
$mode = if ($env:EXOPROV_EXCHANGE_ROLE) { $env:EXOPROV_EXCHANGE_ROLE } else { 'exchange-administrator' }
$principal = $env:EXOPROV_IDENTITY_PRINCIPAL_ID
if (-not $principal) { throw "EXOPROV_IDENTITY_PRINCIPAL_ID is set by 'azd provision'; run this through azd" }

switch ($mode) {
  'exchange-administrator' { $roleName = 'Exchange Administrator' }
  'scoped' {
    Write-Host "postprovision: EXOPROV_EXCHANGE_ROLE=scoped, so no directory role is assigned."
    Write-Host "  An Exchange administrator now runs: ./infra/hooks/exchange-rbac.ps1 -AppId $env:EXOPROV_IDENTITY_CLIENT_ID -ObjectId $principal"
    exit 0
  }
  'none' { Write-Host 'postprovision: EXOPROV_EXCHANGE_ROLE=none; assign the Exchange role yourself.'; exit 0 }
  default { throw "EXOPROV_EXCHANGE_ROLE='$mode' is not one of exchange-administrator, scoped, none" }
}

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
  throw "the Azure CLI (az) assigns the directory role; install it, 'az login' as a Privileged Role Administrator, then 'azd hooks run postprovision'"
}

$graph = 'https://graph.microsoft.com/v1.0/roleManagement/directory'
$roleFilter = @{ '$filter' = "displayName eq '$roleName'"; '$select' = 'id' } | ConvertTo-Json -Compress
$roleId = az rest --method GET --url "$graph/roleDefinitions" --uri-parameters $roleFilter --query 'value[0].id' --output tsv
if (-not $roleId) { throw "no directory role named '$roleName' in this tenant" }

$assignmentFilter = @{ '$filter' = "principalId eq '$principal' and roleDefinitionId eq '$roleId'" } | ConvertTo-Json -Compress
$existing = az rest --method GET --url "$graph/roleAssignments" --uri-parameters $assignmentFilter --query 'length(value)' --output tsv
if ($existing -ne '0') { Write-Host "postprovision: the identity already holds '$roleName'; nothing to do."; exit 0 }

$body = @{ principalId = $principal; roleDefinitionId = $roleId; directoryScopeId = '/' } | ConvertTo-Json -Compress
az rest --method POST --url "$graph/roleAssignments" --headers 'Content-Type=application/json' --body $body --output none
Write-Host "postprovision: assigned '$roleName' to the app's identity ($principal)."
