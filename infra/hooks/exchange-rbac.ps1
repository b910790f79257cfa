<#
.SYNOPSIS
  Least-privilege Exchange RBAC for exoprov's identity: a role group limited to dir-synced recipients.

.DESCRIPTION
  The documented alternative to the Exchange Administrator directory role (app-only-auth-powershell-v2,
  "custom role groups ... using service principals"). Safe to run again: it creates only what is missing.
  Run by an Exchange administrator in PowerShell 7 with the ExchangeOnlineManagement module.
  Whether the 'Mail Recipients' role carries Set-Mailbox -IsExchangeCloudManaged is not documented:
  afterwards, `exoprov doctor` probes exactly that and says so if it is missing.
#>
param(
  [Parameter(Mandatory)] [string] $AppId,      # the identity's client id (EXOPROV_IDENTITY_CLIENT_ID)
  [Parameter(Mandatory)] [string] $ObjectId,   # the identity's object id (EXOPROV_IDENTITY_PRINCIPAL_ID)
  [string] $Name = 'exoprov'
)
$ErrorActionPreference = 'Stop'
Connect-ExchangeOnline -ShowBanner:$false

$sp = Get-ServicePrincipal -Identity $ObjectId -ErrorAction SilentlyContinue
if (-not $sp) { $sp = New-ServicePrincipal -AppId $AppId -ObjectId $ObjectId -DisplayName $Name }

$scopeName = "$Name dir-synced recipients"
if (-not (Get-ManagementScope -Identity $scopeName -ErrorAction SilentlyContinue)) {
  # Single quotes: the filter must reach Exchange as written, not expanded by PowerShell.
  New-ManagementScope -Name $scopeName -RecipientRestrictionFilter 'IsDirSynced -eq $true' | Out-Null
}

$group = Get-RoleGroup -Identity $Name -ErrorAction SilentlyContinue
if (-not $group) {
  New-RoleGroup -Name $Name -Roles 'Mail Recipients', 'View-Only Configuration' -CustomRecipientWriteScope $scopeName `
    -Description 'exoprov: cloud-management sweep and provisioning chain (dir-synced recipients only)' | Out-Null
}
if (-not (Get-RoleGroupMember -Identity $Name | Where-Object { $_.Identity -eq $sp.Identity })) {
  Add-RoleGroupMember -Identity $Name -Member $sp.Identity
}
Write-Host "exoprov's identity is a member of role group '$Name' (write scope: $scopeName)."
