#!/usr/bin/env bash
# Reverse ETL of account health: each modelled account gets its latest health as group traits
# (health_score, at_risk, recency_days, active_seats, ...). Run after `segflow models run`.
#   analytics/reverse_etl/account_health.sh                   # to the local edge (segflow up)
#   SEGFLOW_REVERSE_ETL_API_HOST=https://api.segment.io \
#   SEGFLOW_REVERSE_ETL_WRITE_KEY=... analytics/reverse_etl/account_health.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# the embedded default source's key serves only the local edge; set yours for anything else
export SEGFLOW_REVERSE_ETL_WRITE_KEY=${SEGFLOW_REVERSE_ETL_WRITE_KEY:-dev-write-key}
exec segflow reverse-etl \
    --reverse-etl-sync-name account_health \
    --reverse-etl-call group \
    --reverse-etl-group-id-column group_id \
    --reverse-etl-user-id-column user_id \
    --reverse-etl-query-file "$here/account_health.sql" \
    --reverse-etl-api-host "${SEGFLOW_REVERSE_ETL_API_HOST:-http://127.0.0.1:8088}" \
    "$@"
