// What the HR system may do, and nothing more: put requests on provision-requests and take results
// off provision-results. It cannot write to a step queue (only provision-requests is an entry point),
// read requests, or touch the ledger. Queue-level scope is supported for the queue data roles.
param storageAccountName string
param principalId string
@allowed(['ServicePrincipal', 'User', 'Group'])
param principalType string = 'ServicePrincipal'

var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // add messages, nothing else
var storageQueueDataMessageProcessor = '8a0f0c08-91a1-4084-bc3d-661d67233fed' // peek, receive, delete

resource stg 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: stg
  name: 'default'
}

resource requests 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: 'provision-requests'
}

resource results 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: 'provision-results'
}

resource sendsRequests 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(requests.id, principalId, storageQueueDataMessageSender)
  scope: requests
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
  }
}

resource takesResults 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(results.id, principalId, storageQueueDataMessageProcessor)
  scope: results
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageProcessor)
  }
}
