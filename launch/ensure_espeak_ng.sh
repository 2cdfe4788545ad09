#!/usr/bin/env bash
# Makes sure espeak-ng (it synthesizes the embedded speech corpus) is on PATH, installing it
# when it is missing (apt-get as root or through passwordless sudo, or Homebrew).
#
#   bash launch/ensure_espeak_ng.sh
#
# launch/venv.sh runs it first. When espeak-ng cannot be installed it warns and exits 0 (jobs
# on other data sets do not need it), except under CI=true, where it exits 1: the job tests
# need the corpus, and a CI run without them must not pass.
set -uo pipefail

command -v espeak-ng >/dev/null 2>&1 && exit 0
echo "espeak-ng (it synthesizes the embedded speech corpus) is missing; installing it." >&2
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; }
  if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
    $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq espeak-ng >&2 || true
  fi
elif command -v brew >/dev/null 2>&1; then
  brew install espeak-ng >&2 || true
fi
command -v espeak-ng >/dev/null 2>&1 && exit 0

fix="Install it (Debian/Ubuntu: sudo apt-get install espeak-ng; macOS: brew install espeak-ng) and run again"
if [ "${CI:-}" = "true" ]; then
  echo "error: espeak-ng is missing and could not be installed; the job tests need it. $fix." >&2
  exit 1
fi
echo "Could not install espeak-ng here. $fix; jobs on other data sets do not need it." >&2
exit 0
