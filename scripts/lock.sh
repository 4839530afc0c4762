#!/usr/bin/env bash
# Re-resolve requirements/*.in into requirements/*.lock in throw-away environments.
# Needs the package index; run when a dependency is added or upgraded, then commit the locks.
set -euo pipefail
cd "$(dirname "$0")/.."
source <(sed -n '/^find_python()/,/^}/p' scripts/bootstrap.sh)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lock() {  # lock NAME PYVER EXTRA_PINS...
  local name=$1 ver=$2; shift 2
  "$(find_python "$ver")" -m venv "$tmp/$name"
  "$tmp/$name/bin/pip" install -q --upgrade pip
  "$tmp/$name/bin/pip" install -q "$@" -r "requirements/$name.in"
  "$tmp/$name/bin/pip" freeze --all | grep -v -E '^(pip)==' | sort -f >"requirements/$name.lock"
  echo "requirements/$name.lock: $(wc -l <"requirements/$name.lock") packages"
}
# Usage: scripts/lock.sh [rasa] [app]   (both when none is named)
targets=("${@:-rasa app}")
for target in ${targets[@]}; do
  case $target in
    # Rasa 3.6 pins packaging 20.9; wheel < 0.40 does not need a newer one.
    rasa) lock rasa 3.10 'setuptools==70.3.0' 'wheel==0.38.4' ;;
    app) lock app 3.11 ;;
    *) echo "unknown lock target: $target" >&2; exit 2 ;;
  esac
done
