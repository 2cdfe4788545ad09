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
# It also installs espeak-ng, which builds the embedded speech corpus, when it is missing
# (apt-get as root or through passwordless sudo, or Homebrew).
set -euo pipefail

ensure_espeak_ng() {
  command -v espeak-ng >/dev/null 2>&1 && return 0
  echo "espeak-ng (it synthesizes the embedded speech corpus) is missing; installing it." >&2
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; }
    if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
      $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq espeak-ng >&2 || true
    fi
  elif command -v brew >/dev/null 2>&1; then
    brew install espeak-ng >&2 || true
  fi
  if ! command -v espeak-ng >/dev/null 2>&1; then
    echo "Could not install espeak-ng here. Install it yourself (Debian/Ubuntu:" \
      "sudo apt-get install espeak-ng; macOS: brew install espeak-ng) and run again;" \
      "jobs on other data sets do not need it." >&2
  fi
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
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

ensure_espeak_ng

cd "$root"
export PATH="$venv/bin:$PATH"
exec "$@"
