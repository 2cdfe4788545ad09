#!/usr/bin/env bash
# Runs a command inside the checkout's virtual environment, creating or updating it first.
#
#   bash launch/venv.sh python -m pytest
#   bash launch/venv.sh python -m launch.flows --config=configs/flows.py:moons --workdir=runs/moons
#
# The environment lives in .venv/ next to this checkout. It is (re)installed when missing or
# when pyproject.toml changed since the last install; otherwise it is reused as is.
# PYTHON selects the interpreter that builds it (default: python3, which must be >= 3.11).
# PWAVENET_EXTRAS adds extras to the install, e.g. PWAVENET_EXTRAS=gpu on a CUDA VM.
# First it makes sure espeak-ng, which builds the embedded speech corpus, is installed
# (launch/ensure_espeak_ng.sh: under CI=true a missing espeak-ng fails the run).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
bash "$root/launch/ensure_espeak_ng.sh"  # before the install: a CI run without it fails fast
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "pwavenet needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 and run again." >&2
    exit 2
  fi
  echo "Creating the virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi

extras="test${PWAVENET_EXTRAS:+,$PWAVENET_EXTRAS}"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1) $extras"
stamp="$venv/.pwavenet-install"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing pwavenet[$extras] and its dependencies into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[$extras]"
  echo "$want" > "$stamp"
fi

cd "$root"
export PATH="$venv/bin:$PATH"
exec "$@"
