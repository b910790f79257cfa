// Application roles of the app's identity on Microsoft Graph and Office 365 Exchange Online.
// Managed identities cannot be granted these in the portal; the Graph Bicep extension can.
// The deployer needs AppRoleAssignment.ReadWrite.All and Application.Read.All (e.g. Privileged
// Role Administrator); Azure RBAC Owner is not enough. Without them, set EXOPROV_SKIP_GRANTS=true:
// main.bicep then skips this module and an Entra administrator grants the same roles afterwards.
// main.bicep deploys this module only after the function app, so that a brand-new identity has had time
// to replicate in Entra ID; a grant sent too early fails with "Not a valid reference update"
// (microsoftgraph/msgraph-bicep-types#193), and running `azd provision` again then completes it.
extension microsoftGraphV1

param principalId string
@description('ENFORCE_OBJECTS: groups and contacts add the role that moves their source of authority.')
param enforceObjects string = 'mailboxes'

// Least privilege for the chain and the readiness report (docs/wire-protocols.md), resolved by name at deploy time.
var graphRoles = [
  'User.Read.All' // read the synced user and its licenses
  'User.ReadUpdate.All' // set usageLocation when the user has none
  'LicenseAssignment.ReadWrite.All' // assign and remove the Exchange license
  'LicenseAssignment.Read.All' // subscribedSkus: service plans and free units (the ReadWrite role does not cover it)
  'GroupMember.Read.All' // readiness report: synced groups and their member groups
  'OrgContact.Read.All' // readiness report: synced org contacts
]

// Moving a source of authority (PATCH onPremisesSyncBehavior) and reading it have one role per kind, with no
// Read.All variant: granted only when the sweep enforces that kind (AUTHORITY_ROLES in shared/auth.py).
var objects = split(toLower(replace(enforceObjects, ' ', '')), ',')
var authorityRoles = concat(
  contains(objects, 'groups') ? ['Group-OnPremisesSyncBehavior.ReadWrite.All'] : [],
  contains(objects, 'contacts') ? ['Contacts-OnPremisesSyncBehavior.ReadWrite.All'] : []
)
var grantedGraphRoles = concat(graphRoles, authorityRoles)

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource exchange 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000002-0000-0ff1-ce00-000000000000' // Office 365 Exchange Online
}

resource graphGrants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [
  for role in grantedGraphRoles: {
    principalId: principalId
    resourceId: graph.id
    appRoleId: filter(graph.appRoles, r => r.value == role)[0].id
  }
]

resource exchangeGrant 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: principalId
  resourceId: exchange.id
  appRoleId: filter(exchange.appRoles, r => r.value == 'Exchange.ManageAsApp')[0].id
}
