# segflow developer commands. Everything needed is installed by these targets themselves:
# .venv (Python 3.11), the Kafka jars (Maven, once), the local services.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv lock test test-fast test-cluster lint run services-start services-stop services-status kafka-jars

venv:
	@scripts/venv.sh

# Rewrite requirements/*.lock from pyproject.toml (uv, pinned with hashes); commit them together.
lock:
	@scripts/lock.sh

test:
	@PYTEST_ARGS="$(PYTEST_ARGS)" scripts/test.sh

# For working: the unit and deploy tests (no broker, no emulator; about a minute), in as many
# processes as `make test` runs (SEGFLOW_TEST_WORKERS, 2 by default).
test-fast: venv
	@$(VENV)/bin/pytest -n "$${SEGFLOW_TEST_WORKERS:-2}" --dist loadfile tests/unit tests/deploy $(PYTEST_ARGS)

# The three-broker cluster tests (failover, rolling restart; ~5 min): a private cluster and
# emulator of their own, so the shared services are neither needed nor touched. CI runs it
# after `make test`.
test-cluster: venv kafka-jars
	@$(VENV)/bin/pytest -m cluster $(PYTEST_ARGS)

lint: venv
	@scripts/lint.sh

run: venv kafka-jars
	$(VENV)/bin/segflow up

kafka-jars: venv
	@$(PY) -m runtime.services fetch kafka

services-start: venv
	@$(PY) -m runtime.services start

services-stop: venv
	@$(PY) -m runtime.services stop

services-status: venv
	@$(PY) -m runtime.services status
