#!/usr/bin/env bash
# ruff format --check, ruff check and mypy over the packages and the tests; non-zero if any fails.
set -uo pipefail
cd "$(dirname "$0")/.."

targets=()
for dir in schemas ingest processors sinks reverse_etl deletion observe runtime cli tests bench scripts deploy; do
    if [[ -n $(find "$dir" -name '*.py' -print -quit 2>/dev/null) ]]; then targets+=("$dir"); fi
done

rc=0
.venv/bin/ruff format --check "${targets[@]}" || rc=1
.venv/bin/ruff check "${targets[@]}" || rc=1
.venv/bin/mypy "${targets[@]}" || rc=1
exit $rc
