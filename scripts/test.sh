#!/usr/bin/env bash
# Set up (with the test extras) and run the whole test suite. Fails when pytest collects no test.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev || exit 1
bash scripts/setup_app.sh || exit 1
"${EX4D_VENV:-.venv}/bin/python" -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
