#!/usr/bin/env bash
# Install hintset with every extra into .venv, lint it, and run the whole test suite.
# Used as-is by .ci/run. Extra arguments go to pytest (e.g. -k canny).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all,dev]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collected no test; set -e turns that into a failure too.
.venv/bin/python -m pytest -q "$@"
