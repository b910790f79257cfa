// What operations people see in the portal: four log alerts and a workbook over the events the app logs.
//
// The app logs each event as ONE trace line, `exoprov.event {json}` (shared/events.py, which lists every
// event and field). On the Functions host a Python log record reaches Application Insights as its text
// only: the Python worker sends the host level, message, category and invocation id, so `extra=` fields
// never become custom dimensions (azure-functions-python-worker, Dispatcher.on_logging; issues #1327,
// #1681). The OpenTelemetry distro would keep them, for 27 more packages and ~0.4 s more per cold start.
// So the queries below find the line by its prefix and read its JSON with parse_json. A test
// (tests/test_events.py) checks that every field they read is one the app writes.
//
// The rules are always created, so that they show under Monitor > Alerts whether or not anyone is told;
// the action group (one e-mail receiver) exists only when `alertEmail` is set.

@description('Name of the Application Insights component the app logs to.')
param applicationInsightsName string

param location string
param tags object = {}

@description('Short token that makes the names unique (the deployment\'s resourceToken).')
param resourceToken string

@description('Where alerts are e-mailed; empty = no action group: the rules still fire, in the portal only.')
param alertEmail string = ''

// The sweep's schedule is an NCRONTAB app setting, which Bicep cannot read; this is its interval in
// hours (4 for the default '0 0 */4 * * *'). "No sweep report" fires after twice this long without one.
// At most 24, so that the alert's window (twice the interval) stays within two days.
@minValue(1)
@maxValue(24)
@description('Hours between two scheduled sweeps (ENFORCE_SCHEDULE); the no-sweep alert waits twice as long.')
param sweepIntervalHours int = 4

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Every query starts here: the event lines, their JSON as `e` (shared/events.py: PREFIX).
var eventPrefix = 'exoprov.event '
var events = 'traces | where message startswith "${eventPrefix}" | extend e = parse_json(substring(message, strlen("${eventPrefix}")))'
var sweeps = '${events} | where tostring(e.event) == "run" and tostring(e.kind) == "sweep"'
var results = '${events} | where tostring(e.event) == "result"'

var actionGroupName = 'ag-exoprov-${resourceToken}'
var notify = !empty(alertEmail)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'exoprov'
    enabled: true
    emailReceivers: [
      {
        name: 'operations'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Event alerts are stateless (autoMitigate false): each failed sweep or failed request is one notification.
// The no-sweep alert is stateful: it fires once and resolves itself when a sweep reports again.
var rules = [
  {
    name: 'sweep-failed'
    displayName: 'exoprov: a sweep failed or stopped on the brake'
    description: 'A scheduled sweep raised, failed writes, did not complete (time budget, journal), or stopped on ENFORCE_MAX_CHANGES and changed nothing. The alert\'s rows name the run; `exoprov journal --run ID` and the function\'s logs under that id say more (README, "Alerts and the workbook").'
    severity: 2
    query: '${sweeps} | where isnotempty(tostring(e.error)) or toint(e.failed) > 0 or tobool(e.brakeEngaged) or not(tobool(e.complete)) | project timestamp, runId = tostring(e.runId), mode = tostring(e.mode), candidates = toint(e.candidates), failed = toint(e.failed), brakeEngaged = tobool(e.brakeEngaged), complete = tobool(e.complete), error = tostring(e.error)'
    operator: 'GreaterThan'
    threshold: 0
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
  }
  {
    name: 'request-failed'
    displayName: 'exoprov: a provisioning request failed with internal_error or permission_denied'
    description: 'A result on provision-results carries internal_error (a step gave up after its retries) or permission_denied (the identity lacks a role or consent: run the doctor). The rows name the requestId, which is the correlation id of its log lines.'
    severity: 1
    query: '${results} | where tostring(e.code) in ("internal_error", "permission_denied") | project timestamp, requestId = tostring(e.requestId), code = tostring(e.code), mailboxType = tostring(e.mailboxType)'
    operator: 'GreaterThan'
    threshold: 0
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
  }
  {
    name: 'no-sweep'
    displayName: 'exoprov: no sweep report for ${2 * sweepIntervalHours} hours'
    description: 'No scheduled sweep ended (well or badly) in twice its interval of ${sweepIntervalHours} hours: the timer does not fire, the app is stopped, or it cannot start. It also fires once after the first deployment until the first scheduled sweep has run.'
    severity: 1
    // A log alert's window takes only fixed values (PT1M-PT6H, P1D, P2D), so the rule reads two days and the
    // query keeps the last 2 x interval hours itself: any interval of 1 to 24 hours works.
    query: '${sweeps} | where timestamp > ago(${2 * sweepIntervalHours}h) | project timestamp, runId = tostring(e.runId)'
    operator: 'LessThan'
    threshold: 1
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    autoMitigate: true
  }
  {
    name: 'journal-failed'
    displayName: 'exoprov: the change journal could not be written'
    description: 'A journal write failed, so the writes it was to record were not made (the journal is the storage account\'s exoprov-journal container). Check the storage account and the identity\'s Storage Blob Data Owner role; the next run settles what was left open.'
    severity: 1
    query: '${events} | where (tostring(e.event) == "journal_error" and tobool(e.write)) or (tostring(e.event) == "run" and isnotempty(tostring(e.journalError))) | project timestamp, correlationId = tostring(e.correlationId), operation = tostring(e.operation), error = coalesce(tostring(e.error), tostring(e.journalError))'
    operator: 'GreaterThan'
    threshold: 0
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
  }
]

resource alerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: 'alert-exoprov-${rule.name}-${resourceToken}'
    location: location
    tags: tags
    kind: 'LogAlert'
    dependsOn: [actionGroup]
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [appInsights.id]
      evaluationFrequency: rule.evaluationFrequency
      windowSize: rule.windowSize
      autoMitigate: rule.autoMitigate
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Count'
            operator: rule.operator
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroups: notify ? [resourceId('Microsoft.Insights/actionGroups', actionGroupName)] : []
      }
    }
  }
]

// The workbook: one time range for every panel, then progress, sweeps, results and readiness.
var thirtyDays = 2592000000
var panels = [
  {
    name: 'progress'
    title: 'Cloud-managed progress: candidates left after each sweep (fewer is better)'
    visualization: 'timechart'
    query: '${sweeps} | where isempty(tostring(e.error)) | project timestamp, candidates = toint(e.candidates), changed = toint(e.changed) | order by timestamp asc'
  }
  {
    name: 'durations'
    title: 'Sweep durations (seconds)'
    visualization: 'timechart'
    query: '${sweeps} | project timestamp, durationSeconds = todouble(e.durationSeconds) | order by timestamp asc'
  }
  {
    name: 'writes'
    title: 'Writes per sweep: changed, failed, unknown'
    visualization: 'barchart'
    query: '${sweeps} | where isempty(tostring(e.error)) | project timestamp, changed = toint(e.changed), failed = toint(e.failed), unknown = toint(e.unknown) | order by timestamp asc'
  }
  {
    name: 'sweeps'
    title: 'Recent sweeps'
    visualization: 'table'
    query: '${sweeps} | project timestamp, runId = tostring(e.runId), mode = tostring(e.mode), candidates = toint(e.candidates), changed = toint(e.changed), failed = toint(e.failed), unknown = toint(e.unknown), brakeEngaged = tobool(e.brakeEngaged), complete = tobool(e.complete), durationSeconds = todouble(e.durationSeconds), journalError = tostring(e.journalError), error = tostring(e.error) | order by timestamp desc | take 50'
  }
  {
    name: 'results'
    title: 'Provisioning results by day: completed, or the error code'
    visualization: 'barchart'
    query: '${results} | extend outcome = iff(isempty(tostring(e.code)), tostring(e.status), tostring(e.code)) | summarize requests = count() by day = bin(timestamp, 1d), outcome | order by day asc'
  }
  {
    name: 'slowest'
    title: 'The slowest requests (accepted to result)'
    visualization: 'table'
    query: '${results} | where isnotnull(e.seconds) | project timestamp, requestId = tostring(e.requestId), mailboxType = tostring(e.mailboxType), status = tostring(e.status), code = tostring(e.code), minutes = round(todouble(e.seconds) / 60, 1) | top 20 by minutes desc'
  }
  {
    name: 'readiness'
    title: 'Readiness reports: failing and warning checks'
    visualization: 'timechart'
    query: '${events} | where tostring(e.event) == "readiness" | project timestamp, failed = toint(e.checksFailed), warned = toint(e.checksWarned), manual = toint(e.checksManual) | order by timestamp asc'
  }
  {
    name: 'journal'
    title: 'Journal failures'
    visualization: 'table'
    query: '${events} | where tostring(e.event) == "journal_error" | project timestamp, correlationId = tostring(e.correlationId), operation = tostring(e.operation), write = tobool(e.write), error = tostring(e.error) | order by timestamp desc | take 50'
  }
]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat(
    [
      {
        type: 1
        name: 'about'
        content: {
          json: '## exoprov\nOne row per event the app logs (`exoprov.event` lines in traces; see shared/events.py). The alert rules `alert-exoprov-*` read the same events.'
        }
      }
      {
        type: 9
        name: 'parameters'
        content: {
          version: 'KqlParameterItem/1.0'
          parameters: [
            {
              id: '5b7c1f4e-2d1a-4a51-9d0e-6f2b8c3e7a10'
              version: 'KqlParameterItem/1.0'
              name: 'TimeRange'
              label: 'Time range'
              type: 4
              isRequired: true
              value: { durationMs: thirtyDays }
              typeSettings: {
                selectableValues: [{ durationMs: 86400000 }, { durationMs: 604800000 }, { durationMs: thirtyDays }]
                allowCustom: true
              }
            }
          ]
        }
      }
    ],
    map(panels, panel => {
      type: 3
      name: panel.name
      content: {
        version: 'KqlItem/1.0'
        title: panel.title
        query: panel.query
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: panel.visualization
        timeContextFromParameter: 'TimeRange'
        timeContext: { durationMs: thirtyDays }
      }
    })
  )
  fallbackResourceIds: [appInsights.id]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'exoprov-operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'exoprov operations'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(workbookContent)
  }
}

output workbookName string = workbook.name
output alertRuleNames array = [for (rule, i) in rules: alerts[i].name]
output actionGroupName string = notify ? actionGroupName : ''
