#!/usr/bin/env bash
# Lint and test hintset in its two environments. Used as-is by .ci/run.
#   .venv-pose  core + the `pose-bundled` extra + pytest (mediapipe 0.10.21 with its bundled
#               models, numpy 1.x): tests/test_pose_bundled.py; then it assembles a real
#               pose_landmarker_full.task from those models and saves that route's keypoints
#               (build/pose-task/) for the Tasks-route test of the default environment
#   .venv       every extra (the default stack: numpy 2, mediapipe's Tasks API): the whole suite
# Extra arguments go to the default environment's pytest (e.g. -k canny);
# HINTSET_SKIP_BUNDLED=1 skips the second environment (its tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${HINTSET_SKIP_BUNDLED:-}" != 1 ]; then
    [ -x .venv-pose/bin/python ] || "$PY" -m venv .venv-pose
    .venv-pose/bin/python -m pip install -q --upgrade pip
    .venv-pose/bin/python -m pip install -q -e ".[pose-bundled]" "pytest>=8" "pytest-timeout>=2.3"
    .venv-pose/bin/python -m pip check
    .venv-pose/bin/python -m pytest -q tests/test_pose_bundled.py
    rm -rf build/pose-task
    .venv-pose/bin/python benchmarks/pose_tasks_vs_bundled.py save build/pose-task/bundled.json build/pose-task
    export HINTSET_TEST_TASKS="$PWD/build/pose-task"
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all,dev]"
.venv/bin/python -m pip check
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collected no test; set -e turns that into a failure too.
.venv/bin/python -m pytest -q "$@"
