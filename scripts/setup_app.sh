#!/usr/bin/env bash
# Install what `ex4d app` / `ex4d view` and their end-to-end tests need, on top of scripts/setup.sh:
#   * the app extra's PyPI packages (starlette, uvicorn) and playwright (Python client; the browser is Debian's),
#   * the front-end: npm packages of web/ (three, esbuild; exact versions from web/package-lock.json),
#     built into ex4d/app/static/,
#   * Debian's chromium (/usr/bin/chromium) for the browser tests and Debian's ffmpeg (ffprobe reads the stereo
#     files' st3d box in the tests) (needs root or sudo; skipped if present).
# Idempotent and fast when everything is already there. Environment: EX4D_VENV (default .venv),
# EX4D_SKIP_BROWSER=1 to skip chromium (the app itself does not need it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${EX4D_VENV:-.venv}"
py="$venv/bin/python"
[ -x "$py" ] || bash scripts/setup.sh

# 1. Python: the app extra (+ playwright for the tests).
if ! "$py" -c "import starlette, uvicorn, playwright" 2>/dev/null; then
  if grep -q '^app *=' pyproject.toml; then
    "$py" -m pip install -q -e ".[app]" "playwright>=1.50"
  else
    "$py" -m pip install -q "starlette>=0.40" "uvicorn>=0.30" "playwright>=1.50"
  fi
fi

# 2. Front-end: npm ci only when package-lock.json changed since the last install, build when sources changed.
command -v npm >/dev/null || { echo "setup_app: npm not found (install Node.js ≥ 18)" >&2; exit 1; }
stamp=web/node_modules/.ex4d-lock
if [ ! -f "$stamp" ] || ! cmp -s web/package-lock.json "$stamp"; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  cp web/package-lock.json "$stamp"
fi
out=ex4d/app/static
if [ ! -f "$out/view.js" ] || [ -n "$(find web/src web/build.mjs web/package-lock.json -newer "$out/view.js" 2>/dev/null | head -1)" ]; then
  (cd web && node build.mjs)
fi

# 3. Browser for the end-to-end tests, and Debian's FFmpeg (its ffprobe checks the stereo files' st3d metadata).
need=""
[ "${EX4D_SKIP_BROWSER:-0}" != "1" ] && [ ! -x /usr/bin/chromium ] && need="chromium fonts-dejavu-core"
command -v ffprobe >/dev/null || need="$need ffmpeg"
if [ -n "$need" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup_app: installing Debian packages for the browser and stereo tests: ${sudo:+sudo }apt-get install$need" \
       "(EX4D_SKIP_BROWSER=1 skips chromium)"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
echo "setup_app: ready (front-end in $out$( [ -x /usr/bin/chromium ] && echo ", $(/usr/bin/chromium --version 2>/dev/null | head -1)"))"
