#!/usr/bin/env bash
# Create .venv (Python 3.11) and install into it what requirements/dev.lock pins (the
# dependencies, the s3 and local extras, the dev tools; hash-checked), then segflow itself
# (editable, no dependencies of its own resolving; this compiles the C extensions in place);
# again whenever pyproject.toml, the lock or a C source changed since the last install (their
# hash is kept in a stamp file).
# dbt (the `models` extra, for `segflow models`) goes into .venv-dbt from requirements/models.lock:
# its pins conflict with the dev tools' (dbt-core 1.11 wants pathspec<0.13, mypy pathspec>=1);
# `segflow models` finds it. The lock files are written by scripts/lock.sh (make lock).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp=.venv/.segflow-pyproject.sha256
want=$(cat pyproject.toml requirements/dev.lock schemas/_avro_native.c processors/_prescreen.c ingest/_jsonscan.c | sha256sum | cut -d' ' -f1)

if [[ ! -x .venv/bin/python ]]; then
    echo "venv: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    echo "venv: installing requirements/dev.lock and segflow into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.lock
    .venv/bin/python -m pip install --quiet --no-deps -e .
    echo "$want" >"$stamp"
fi

dbt_stamp=.venv-dbt/.segflow-pyproject.sha256
dbt_want=$(sha256sum requirements/models.lock | cut -d' ' -f1)
if [[ ! -x .venv-dbt/bin/python ]]; then
    echo "venv: creating .venv-dbt (dbt for segflow models)"
    "$PYTHON" -m venv .venv-dbt
fi
if [[ ! -f $dbt_stamp || "$(cat "$dbt_stamp")" != "$dbt_want" ]]; then
    echo "venv: installing requirements/models.lock (dbt) into .venv-dbt"
    .venv-dbt/bin/python -m pip install --quiet --upgrade pip
    .venv-dbt/bin/python -m pip install --quiet --require-hashes -r requirements/models.lock
    echo "$dbt_want" >"$dbt_stamp"
fi
