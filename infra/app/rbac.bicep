// Azure roles of the app's identity: exactly what the host and the chain need, on their own resources.
param storageAccountName string
param applicationInsightsName string
param principalId string

// Built-in role definition ids (the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // host storage, timer leases, deployment package, ledger
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // triggers, delayed sends, poison moves
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Application Insights with Entra auth

resource stg 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stg.id, principalId, storageBlobDataOwner)
  scope: stg
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
  }
}

// Queue Data Contributor, not Reader + Message Processor: a trigger that releases a failed message or
// writes to a poison queue needs more than the documented pair (MicrosoftDocs/azure-docs#120932).
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stg.id, principalId, storageQueueDataContributor)
  scope: stg
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}
