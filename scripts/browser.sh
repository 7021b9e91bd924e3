#!/usr/bin/env bash
# The browser of the web console's test (tests/integration/test_console_browser.py): Debian's
# chromium and chromium-driver, installed with apt-get when missing. Nothing is downloaded by
# the test itself (selenium is given both paths, so Selenium Manager never runs).
# Exit status: 0 when both are there afterwards. When they cannot be installed (no root, apt
# unreachable) it says so and exits 1; the browser test then fails under CI (CI=true) and is
# skipped, naming this script, on a developer's machine.
set -uo pipefail

have() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }

if have; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser: no apt-get here: install chromium and chromedriver yourself" >&2
    exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "browser: chromium is missing and installing it needs root:" \
            "sudo apt-get install chromium chromium-driver" >&2
        exit 1
    fi
fi
echo "browser: installing Debian's chromium and chromium-driver (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get update -q >/dev/null || \
    ! $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver \
        fonts-dejavu-core >/dev/null; then
    echo "browser: apt-get could not install chromium chromium-driver" >&2
    exit 1
fi
have || { echo "browser: installed, but /usr/bin/chromium or chromedriver is missing" >&2; exit 1; }
