#!/bin/sh
# azd postprovision: gives the app's identity the Entra directory role that Exchange Online checks
# for app-only calls. Bicep cannot assign directory roles. Safe to run again: it assigns only what is
# missing. EXOPROV_EXCHANGE_ROLE chooses the role:
#   exchange-administrator   (default) documented to cover every cmdlet the app uses
#   scoped                   least privilege: no directory role; an Exchange admin runs
#                            infra/hooks/exchange-rbac.ps1 (role group limited to dir-synced recipients)
#   none                     assign nothing (you manage it yourself)
set -eu

mode="${EXOPROV_EXCHANGE_ROLE:-exchange-administrator}"
principal="${EXOPROV_IDENTITY_PRINCIPAL_ID:?is set by 'azd provision' from the deployment outputs; run this through azd}"

case "$mode" in
  exchange-administrator) role_name="Exchange Administrator" ;;
  scoped)
    echo "postprovision: EXOPROV_EXCHANGE_ROLE=scoped, so no directory role is assigned."
    echo "  An Exchange administrator now runs, in PowerShell 7 with ExchangeOnlineManagement:"
    echo "  ./infra/hooks/exchange-rbac.ps1 -AppId ${EXOPROV_IDENTITY_CLIENT_ID:-<client id>} -ObjectId $principal"
    exit 0 ;;
  none) echo "postprovision: EXOPROV_EXCHANGE_ROLE=none; assign the Exchange role yourself."; exit 0 ;;
  *) echo "postprovision: EXOPROV_EXCHANGE_ROLE='$mode' is not one of exchange-administrator, scoped, none" >&2; exit 2 ;;
esac

if ! command -v az >/dev/null 2>&1; then
  echo "postprovision: the Azure CLI (az) assigns the directory role; install it, run 'az login' as a" >&2
  echo "  Privileged Role Administrator, then 'azd hooks run postprovision'." >&2
  exit 1
fi

graph="https://graph.microsoft.com/v1.0/roleManagement/directory"
role_id=$(az rest --method GET --url "$graph/roleDefinitions" \
  --uri-parameters "{\"\$filter\": \"displayName eq '$role_name'\", \"\$select\": \"id\"}" \
  --query "value[0].id" --output tsv)
if [ -z "$role_id" ]; then
  echo "postprovision: no directory role named '$role_name' in this tenant" >&2
  exit 1
fi

existing=$(az rest --method GET --url "$graph/roleAssignments" \
  --uri-parameters "{\"\$filter\": \"principalId eq '$principal' and roleDefinitionId eq '$role_id'\"}" \
  --query "length(value)" --output tsv)
if [ "$existing" != "0" ]; then
  echo "postprovision: the identity already holds '$role_name'; nothing to do."
  exit 0
fi

az rest --method POST --url "$graph/roleAssignments" --headers "Content-Type=application/json" \
  --body "{\"principalId\": \"$principal\", \"roleDefinitionId\": \"$role_id\", \"directoryScopeId\": \"/\"}" \
  --output none
echo "postprovision: assigned '$role_name' to the app's identity ($principal)."
echo "  Role and app-role grants can take up to an hour to reach managed-identity tokens;"
echo "  'exoprov doctor' (README, 'Deploy') tells when everything is in place."
