#!/usr/bin/env bash
# Create .venv (Python 3.11) and install segflow with its dev extras into it; install again
# whenever pyproject.toml changed since the last install (its hash is kept in a stamp file).
# dbt (the `models` extra, for `segflow models`) goes into .venv-dbt: its pins conflict with the
# dev tools' (dbt-core 1.11 wants pathspec<0.13, mypy pathspec>=1); `segflow models` finds it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp=.venv/.segflow-pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)

if [[ ! -x .venv/bin/python ]]; then
    echo "venv: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    echo "venv: installing segflow[dev] into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    echo "$want" >"$stamp"
fi

dbt_stamp=.venv-dbt/.segflow-pyproject.sha256
if [[ ! -x .venv-dbt/bin/python ]]; then
    echo "venv: creating .venv-dbt (dbt for segflow models)"
    "$PYTHON" -m venv .venv-dbt
fi
if [[ ! -f $dbt_stamp || "$(cat "$dbt_stamp")" != "$want" ]]; then
    echo "venv: installing segflow's models extra (dbt) into .venv-dbt"
    mapfile -t models_reqs < <(.venv/bin/python -c 'import tomllib
for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["models"]:
    print(r)')
    .venv-dbt/bin/python -m pip install --quiet --upgrade pip
    .venv-dbt/bin/python -m pip install --quiet "${models_reqs[@]}"
    echo "$want" >"$dbt_stamp"
fi
