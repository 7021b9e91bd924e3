#!/usr/bin/env bash
# The whole check, as CI runs it: venv, Kafka jars, local services, lint, tests.
# Starts the services that are not running and stops (only) those again, also on failure.
# Extra pytest arguments: PYTEST_ARGS="-k kafka -x" scripts/test.sh, or scripts/test.sh -k kafka
# Exit status: pytest's; a lint failure makes it non-zero too.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh || exit 1
py=.venv/bin/python

started=$(mktemp)
cleanup() {
    if [[ -s $started ]]; then
        # shellcheck disable=SC2046
        $py -m runtime.services stop $(cat "$started")
    fi
    rm -f "$started"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

$py -m runtime.services fetch kafka || exit 1
$py -m runtime.services start --record "$started" || exit 1
# Debian's chromium for the console's browser test; a failure here makes that test fail in CI
scripts/browser.sh || echo "test: the browser could not be installed (see above)" >&2

scripts/lint.sh
lint_rc=$?

read -ra pytest_args <<<"${PYTEST_ARGS:-}"
# The three-broker cluster tests have their own target (`make test-cluster`); a -m given in
# PYTEST_ARGS or on the command line comes later and wins.
# Two pytest processes (pytest-xdist), each test file whole in one of them (its module
# fixtures, a private broker or emulator, are made once): the integration tests mostly wait
# (on session timeouts, rebalances, subprocesses starting) and one process leaves the cores
# idle. Each worker is a test session of its own (tests/conftest.py: its topics, its tag).
# SEGFLOW_TEST_WORKERS=0 runs everything in this one process (a -n given later wins too).
.venv/bin/pytest -m "not cluster" -n "${SEGFLOW_TEST_WORKERS:-2}" --dist loadfile \
    "${pytest_args[@]}" "$@"
rc=$?

if [[ $rc -eq 0 && $lint_rc -ne 0 ]]; then
    echo "test: pytest passed but lint failed" >&2
    rc=1
fi
exit $rc
