#!/usr/bin/env bash
# Create .venv (Python 3.11) and install segflow with its dev extras into it; install again
# whenever pyproject.toml changed since the last install (its hash is kept in a stamp file).
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
