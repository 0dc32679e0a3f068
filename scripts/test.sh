#!/usr/bin/env bash
# Lint and test hintset in its two environments. Used as-is by .ci/run.
#   .venv       every extra (the default stack: numpy 2, mediapipe's Tasks API): the whole suite
#   .venv-pose  core + the `pose-bundled` extra + pytest (mediapipe 0.10.21 with its bundled
#               models, numpy 1.x): the bundled-model tests (tests/test_pose_bundled.py)
# Extra arguments go to the first pytest run (e.g. -k canny); HINTSET_SKIP_BUNDLED=1 skips the
# second environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all,dev]"
.venv/bin/python -m pip check
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collected no test; set -e turns that into a failure too.
.venv/bin/python -m pytest -q "$@"
[ "${HINTSET_SKIP_BUNDLED:-}" = 1 ] && exit 0
[ -x .venv-pose/bin/python ] || "$PY" -m venv .venv-pose
.venv-pose/bin/python -m pip install -q --upgrade pip
.venv-pose/bin/python -m pip install -q -e ".[pose-bundled]" "pytest>=8" "pytest-timeout>=2.3"
.venv-pose/bin/python -m pip check
.venv-pose/bin/python -m pytest -q tests/test_pose_bundled.py
