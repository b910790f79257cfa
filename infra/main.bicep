// exoprov on Azure: a Flex Consumption function app whose one user-assigned identity reaches
// storage, Application Insights, Microsoft Graph and Exchange Online. No keys, no secrets.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds a short unique token used in every resource name.')
param environmentName string

@minLength(1)
@description('Region for every resource (Flex Consumption regions only).')
@allowed([
  'australiaeast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'westeurope'
  'westus2'
  'westus3'
])
@metadata({ azd: { type: 'location' } })
param location string

// The app's settings (README "Settings"). They are strings on purpose: the app validates every
// one of them at start and names the setting when a value is wrong (see `exoprov doctor`).
@description('report (change nothing, the safe default) or apply.')
@allowed(['report', 'apply'])
param enforceMode string = 'report'
@description('NCRONTAB schedule of the sweep, UTC.')
param enforceSchedule string = '0 0 */4 * * *'
@description('NCRONTAB schedule of the readiness report (exoprov-reports container), UTC; daily by default.')
param readinessSchedule string = '0 30 5 * * *'
@description('The brake: a sweep that would change more mailboxes than this changes none. 0 = no limit.')
param enforceMaxChanges string = '500'
param enforceRecipientTypes string = 'UserMailbox,SharedMailbox,RoomMailbox,EquipmentMailbox'
@description('Exchange calls in flight from one process (one instance), 1-16; README "Instances, settings and re-runs".')
param enforceConcurrency string = '2'
@description('UPNs, SMTP addresses, object ids or name:<display name> the sweep never touches, comma-separated.')
param enforceExclude string = ''
@description('What the sweep makes cloud-managed: mailboxes, groups, contacts (comma-separated). groups and contacts also grant their Graph onPremisesSyncBehavior roles.')
param enforceObjects string = 'mailboxes'
@description('true lets the group sweep convert distribution lists and mail-enabled security groups too.')
@allowed(['true', 'false'])
param enforceMailEnabledGroups string = 'false'
@description('SKU part numbers or skuIds that provisioning requests may ask for, comma-separated.')
param allowedLicenses string = 'EXCHANGESTANDARD'
param defaultLicense string = 'EXCHANGESTANDARD'
@description('ISO 3166 alpha-2 code for users without a usage location; empty = such requests fail clearly.')
param defaultUsageLocation string = ''
param syncWaitMinutes string = '1440'
param mailboxWaitMinutes string = '1440'
param conversionWaitMinutes string = '60'
param pollMinSeconds string = '60'
param pollMaxSeconds string = '900'

// Flex Consumption scales each function on its own (HTTP triggers together), and this cap applies to each
// of those scale groups, not to the app: every queue function, and the HTTP group, may run this many
// on-demand instances at once (a timer runs on one at a time). Learn accepts 1-1000 ("Event-driven
// scaling", Limit scale-out). README "Instances, settings and re-runs" computes the Exchange ceiling.
@description('On-demand instances per per-function scale group (each queue function, each timer, the HTTP group).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 1

@description('true when the deployer cannot grant Graph app roles in Entra ID: the grants are skipped and printed.')
param skipGraphGrants bool = false

@description('Object id of the HR system\'s identity (service principal, user or group); empty to grant nothing')
param hrPrincipalId string = ''

@allowed(['ServicePrincipal', 'User', 'Group'])
param hrPrincipalType string = 'ServicePrincipal'

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = '${abbrs.webSitesFunctions}exoprov-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

// Every queue the app reads or writes (shared/queues.py); the host would create the poison queues on
// first use, but creating them here lets the identity's rights and the doctor's checks cover them.
var queueNames = [
  'provision-requests'
  'provision-license'
  'provision-mailbox'
  'provision-configure'
  'provision-requests-poison'
  'provision-license-poison'
  'provision-mailbox-poison'
  'provision-configure-poison'
  'provision-results'
  'provision-unreadable'
]

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The one identity of the app: storage, monitoring, Graph and Exchange all see this principal.
module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}exoprov-${resourceToken}'
    location: location
    tags: tags
  }
}

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'plan'
  scope: rg
  params: {
    name: '${abbrs.webServerFarms}${resourceToken}'
    sku: { name: 'FC1', tier: 'FlexConsumption' }
    reserved: true
    location: location
    tags: tags
  }
}

module storage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard_LRS' // not the module's default Standard_GRS: queues, ledger and journal are working state
    allowSharedKeyAccess: false // identity only: no account key can leak because none works
    defaultToOAuthAuthentication: true // the portal and tools use Entra ID too, as keys do not work
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
    blobServices: {
      containers: [
        { name: deploymentContainerName }
        { name: 'exoprov-ledger' }
        { name: 'exoprov-journal' }
        { name: 'exoprov-reports' } // the readiness report: readiness/{day}.json and .html, and latest.*
      ]
    }
    queueServices: {
      queues: [for queue in queueNames: { name: queue }]
    }
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module monitoring 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'monitoring'
  scope: rg
  params: {
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true // telemetry is sent with the identity (Monitoring Metrics Publisher)
  }
}

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    appServicePlanId: plan.outputs.resourceId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.name
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    maximumInstanceCount: maximumInstanceCount
    appSettings: {
      AZURE_CLIENT_ID: identity.outputs.clientId
      AZURE_TENANT_ID: tenant().tenantId
      CLOUD: 'public'
      ENFORCE_SCHEDULE: enforceSchedule
      READINESS_SCHEDULE: readinessSchedule
      ENFORCE_MODE: enforceMode
      ENFORCE_OBJECTS: enforceObjects
      ENFORCE_MAIL_ENABLED_GROUPS: enforceMailEnabledGroups
      ENFORCE_MAX_CHANGES: enforceMaxChanges
      ENFORCE_RECIPIENT_TYPES: enforceRecipientTypes
      ENFORCE_EXCLUDE: enforceExclude
      ENFORCE_CONCURRENCY: enforceConcurrency
      ENFORCE_TIME_BUDGET_SECONDS: '1500' // under the 30-minute functionTimeout of host.json
      ALLOWED_LICENSES: allowedLicenses
      DEFAULT_LICENSE: defaultLicense
      DEFAULT_USAGE_LOCATION: defaultUsageLocation
      SYNC_WAIT_MINUTES: syncWaitMinutes
      MAILBOX_WAIT_MINUTES: mailboxWaitMinutes
      CONVERSION_WAIT_MINUTES: conversionWaitMinutes
      POLL_MIN_SECONDS: pollMinSeconds
      POLL_MAX_SECONDS: pollMaxSeconds
    }
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.name
    principalId: identity.outputs.principalId
  }
}

// The HR system's identity, when given: it may send requests and take results, nothing else.
module hrAccess './app/hr-access.bicep' = if (!empty(hrPrincipalId)) {
  name: 'hrAccess'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    principalId: hrPrincipalId
    principalType: hrPrincipalType
  }
}

// Graph and Exchange application roles for the identity (Microsoft Graph Bicep extension), unless the
// deployer has no Entra rights (EXOPROV_SKIP_GRANTS). After the function app: a grant to an identity Entra
// has not replicated yet fails (msgraph-bicep-types#193); the site usually takes long enough, a re-run heals.
module permissions './app/permissions.bicep' = if (!skipGraphGrants) {
  name: 'permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    enforceObjects: enforceObjects
  }
  dependsOn: [
    api
  ]
}

// Operations: alert rules and a workbook over the events the app logs (app/monitoring.bicep; README
// "Alerts and the workbook"). Without EXOPROV_ALERT_EMAIL the rules still fire, in the portal only.
@description('E-mail address the alerts go to; empty = no action group, the rules fire in the portal only.')
param alertEmail string = ''
@description('Hours between two sweeps of ENFORCE_SCHEDULE (4 for the default); no sweep for twice that alerts.')
@minValue(1)
@maxValue(24)
param sweepIntervalHours int = 4

module operations './app/monitoring.bicep' = {
  name: 'operations'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.name
    location: location
    tags: tags
    resourceToken: resourceToken
    alertEmail: alertEmail
    sweepIntervalHours: sweepIntervalHours
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output EXOPROV_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output EXOPROV_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output EXOPROV_STORAGE_ACCOUNT string = storage.outputs.name
// The post-provision hooks read this: when true they print the grants an Entra administrator runs instead.
output EXOPROV_GRANTS_SKIPPED bool = skipGraphGrants
