#!/usr/bin/env bash
# Set up (with the test extras) and run the whole test suite. Fails when pytest collects no test.
# Runs scripts/setup_app.sh, which apt-get installs Debian's chromium and ffmpeg (root or sudo) unless they are
# present (EX4D_SKIP_BROWSER=1 skips chromium).
set -uo pipefail
cd "$(dirname "$0")/.."
echo "test.sh: setting up with scripts/setup.sh --dev and scripts/setup_app.sh (the latter apt-get installs" \
     "Debian's chromium and ffmpeg for the browser and stereo tests unless they are there;" \
     "EX4D_SKIP_BROWSER=1 skips chromium), then pytest"
bash scripts/setup.sh --dev || exit 1
bash scripts/setup_app.sh || exit 1
"${EX4D_VENV:-.venv}/bin/python" -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
