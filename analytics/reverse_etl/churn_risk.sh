#!/usr/bin/env bash
# Reverse ETL of the churn-risk audience: each user of a modelled account gets the account's
# health as identify traits (account_health_score, churn_risk true/false, ...), so tools that
# read Segment profiles can build the "churn_risk = true" audience. Run after `segflow models run`.
#   analytics/reverse_etl/churn_risk.sh                       # to the local edge (segflow up)
#   SEGFLOW_REVERSE_ETL_API_HOST=https://api.segment.io \
#   SEGFLOW_REVERSE_ETL_WRITE_KEY=... analytics/reverse_etl/churn_risk.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# the embedded default source's key serves only the local edge; set yours for anything else
export SEGFLOW_REVERSE_ETL_WRITE_KEY=${SEGFLOW_REVERSE_ETL_WRITE_KEY:-dev-write-key}
exec segflow reverse-etl \
    --reverse-etl-sync-name churn_risk \
    --reverse-etl-call identify \
    --reverse-etl-user-id-column user_id \
    --reverse-etl-query-file "$here/churn_risk.sql" \
    --reverse-etl-api-host "${SEGFLOW_REVERSE_ETL_API_HOST:-http://127.0.0.1:8088}" \
    "$@"
