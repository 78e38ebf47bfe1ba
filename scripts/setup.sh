#!/usr/bin/env bash
# Set up ex4d in a virtual environment (.venv by default) on a fresh machine.
#   bash scripts/setup.sh          # the package, CLI and everything `ex4d run --example` needs
#   bash scripts/setup.sh --dev    # + the diffusion, app, train and eval extras and pytest (the test suite's needs;
#                                  #   scripts/setup_app.sh adds the front-end build and the browser)
# Environment: EX4D_VENV (folder, default .venv); EX4D_TORCH (the torch requirement installed first when
# the environment has no torch yet; default torch==2.13.0, a CPU build — GPU users: install their CUDA
# build of torch into the environment first, or set EX4D_TORCH to it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${EX4D_VENV:-.venv}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev,diffusion,app,train,eval]"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q "${EX4D_TORCH:-torch==2.13.0}"
fi
"$py" -m pip install -q -e ".${extras}"
"$py" -c "import ex4d, torch; print(f'ex4d {ex4d.__version__} ready in $venv (torch {torch.__version__})')"
