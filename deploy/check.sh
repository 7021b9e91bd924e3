#!/usr/bin/env bash
# The deployment checks alone: Dockerfile (hadolint, production lock only), Helm chart (lint,
# template, kubeconform against the Kubernetes and CRD schemas, the PrometheusRule's PromQL and
# metrics, the helm test pod), docker-compose.yml (Compose Specification, Prometheus targets,
# Grafana provisioning), dashboard metrics, SEGFLOW_* names against the code, the lock files.
# The tools are installed once into .cache/ by deploy/tools.py (Go module proxy and PyPI);
# `make test` runs the same tests (tests/deploy).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
exec "$py" -m pytest tests/deploy -q "$@"
