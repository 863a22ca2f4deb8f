#!/usr/bin/env bash
# The README's test command: install heterosymnn with its test extras into a
# virtual environment (.venv, reused when present) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# pytest exits 5 when it collects nothing: that is a failure here too.
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
