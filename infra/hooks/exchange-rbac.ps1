<#
.SYNOPSIS
  Least-privilege Exchange RBAC for exoprov's identity: a role group limited to dir-synced recipients.

.DESCRIPTION
  The documented alternative to the Exchange Administrator directory role (app-only-auth-powershell-v2,
  "custom role groups ... using service principals"). Safe to run again: it creates only what is missing.
  Run by an Exchange administrator in PowerShell 7 with the ExchangeOnlineManagement module.
  Whether the 'Mail Recipients' role carries Set-Mailbox -IsExchangeCloudManaged is not documented:
  afterwards, `exoprov doctor` probes exactly that and says so if it is missing.

  Every object is found by listing and comparing exactly (service principal by AppId, scope and role group
  by Name), never with `Get-* -Identity <value>`: given a value it cannot resolve, such a call can answer
  with every object there is, and the script would then reuse the wrong one.
#>
param(
  [Parameter(Mandatory)] [string] $AppId,      # the identity's client id (EXOPROV_IDENTITY_CLIENT_ID)
  [Parameter(Mandatory)] [string] $ObjectId,   # the identity's object id (EXOPROV_IDENTITY_PRINCIPAL_ID)
  [string] $Name = 'exoprov'
)
$ErrorActionPreference = 'Stop'
Connect-ExchangeOnline -ShowBanner:$false

$sp = @(Get-ServicePrincipal | Where-Object { "$($_.AppId)" -eq $AppId })
if ($sp.Count -gt 1) { throw "$($sp.Count) Exchange service principals have AppId $AppId; remove the extra ones first" }
if ($sp.Count -eq 0) { $sp = @(New-ServicePrincipal -AppId $AppId -ObjectId $ObjectId -DisplayName $Name) }
$sp = $sp[0]
if ("$($sp.ObjectId)" -and "$($sp.ObjectId)" -ne $ObjectId) {
  throw "the Exchange service principal for AppId $AppId has object id $($sp.ObjectId), not $ObjectId; remove it (Remove-ServicePrincipal) and run this again"
}

$scopeName = "$Name dir-synced recipients"
if (-not @(Get-ManagementScope | Where-Object { $_.Name -eq $scopeName }).Count) {
  # Single quotes: the filter must reach Exchange as written, not expanded by PowerShell.
  New-ManagementScope -Name $scopeName -RecipientRestrictionFilter 'IsDirSynced -eq $true' | Out-Null
}

$group = @(Get-RoleGroup | Where-Object { $_.Name -eq $Name })
if (-not $group.Count) {
  $group = @(New-RoleGroup -Name $Name -Roles 'Mail Recipients', 'View-Only Configuration' -CustomRecipientWriteScope $scopeName `
    -Description 'exoprov: cloud-management sweep and provisioning chain (dir-synced recipients only)')
}
# The group's own GUID, which cannot resolve to anything else; members compared as text, exactly.
$groupId = "$($group[0].Guid)"
if (-not $groupId) { throw "role group '$Name' reports no GUID; add the service principal by hand: Add-RoleGroupMember" }
$members = @(Get-RoleGroupMember -Identity $groupId | ForEach-Object { "$($_.Identity)"; "$($_.Name)" } | Where-Object { $_ })
if (-not ($members -contains "$($sp.Identity)" -or $members -contains "$($sp.Name)")) {
  Add-RoleGroupMember -Identity $groupId -Member "$($sp.Identity)"
}
Write-Host "exoprov's identity is a member of role group '$Name' (write scope: $scopeName)."
