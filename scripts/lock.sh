#!/usr/bin/env bash
# Write the lock files in requirements/ from pyproject.toml: every package pinned, with hashes,
# for Python 3.11 on any platform (uv's universal resolution). Run it (`make lock`) after
# changing a dependency in pyproject.toml, and commit the lock files with it.
#
#   requirements/production.lock  dependencies + the s3 extra: the image and production installs
#   requirements/local.lock       the same + local (emulator, demo SDK): the image's local target
#   requirements/dev.lock         the same + local + dev (tests, linters): .venv (make venv)
#   requirements/models.lock      the models extra alone (dbt): .venv-dbt
#
# A version already in a lock file is kept while it satisfies pyproject.toml (`--upgrade` to
# move everything to the newest allowed, or `--upgrade-package NAME`); production.lock takes the
# versions of dev.lock, so the image runs what the tests ran.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
tools=.cache/lock-tools
if [[ ! -x $tools/bin/uv ]] || [[ "$($tools/bin/uv --version)" != "uv $UV_VERSION"* ]]; then
    echo "lock: installing uv $UV_VERSION into $tools"
    "$PYTHON" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet "uv==$UV_VERSION"
fi
uv=$tools/bin/uv
work=.cache/lock
mkdir -p "$work" requirements
compile=(pip compile --quiet --generate-hashes --python-version 3.11 --universal "$@")

# header lines name this script, not uv's command line
export UV_CUSTOM_COMPILE_COMMAND="scripts/lock.sh (make lock)"

"$uv" "${compile[@]}" pyproject.toml --extra s3 --extra local --extra dev \
    -o requirements/dev.lock
# production: the same versions as dev.lock (constraints without their hashes)
sed -e '/^ *--hash/d' -e 's/ \\$//' requirements/dev.lock >"$work/dev.constraints"
"$uv" "${compile[@]}" pyproject.toml --extra s3 -c "$work/dev.constraints" \
    -o requirements/production.lock
"$uv" "${compile[@]}" pyproject.toml --extra s3 --extra local -c "$work/dev.constraints" \
    -o requirements/local.lock
"$PYTHON" -c 'import tomllib
for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["models"]:
    print(r)' >"$work/models.in"
"$uv" "${compile[@]}" "$work/models.in" -o requirements/models.lock
echo "lock: wrote requirements/{production,local,dev,models}.lock"
