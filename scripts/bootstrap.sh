#!/usr/bin/env bash
# Prepare this checkout: Debian packages, the Rasa environment (.venv-rasa, Python 3.10)
# and the application environment (.venv, Python 3.11), each installed from its lock file.
# Safe to run again: an environment is rebuilt only when its lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var/log

# Debian packages the project needs at run or test time: espeak-ng (the phone line's voice, used by
# pyttsx3, which also calls ffmpeg), ffmpeg (WeChat voice messages for POST /asr), chromium (the
# console's browser tests drive it through Playwright; no browser is downloaded) with a Chinese font
# (fonts-wqy-microhei) so its screenshots are legible; the libraries the Asterisk build in
# ../shared/pbx links (the phone tests place real calls through it) and xz-utils to unpack it;
# haproxy, the load balancer of the scale-out tests (stack/scaleout.py) and of deploy/compose.yml, and
# redis-server, which those tests start on a port of their own to restart it.
APT_PACKAGES=(${HEZE_APT_PACKAGES:-espeak-ng ffmpeg chromium fonts-wqy-microhei haproxy redis-server
  libedit2 libjansson4 libxml2 libxslt1.1 libuuid1 libsqlite3-0 libssl3 libcurl4 zlib1g libcrypt1 xz-utils})

say() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] 错误 / error: %s\n' "$*" >&2; exit 1; }

ensure_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "缺少系统软件包，请管理员安装 / missing Debian packages, install them as root: apt-get install ${missing[*]}"
  fi
  say "apt-get install ${missing[*]}"
  apt-get update -qq >var/log/apt.log 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>var/log/apt.log 2>&1 \
    || die "apt-get failed, see var/log/apt.log"
}

# find_python 3.10 -> path of an interpreter of that version: PATH, then pyenv, then uv.
find_python() {
  local ver=$1 cand
  for cand in "python$ver" python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && \
       "$cand" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$ver' else 1)" 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root)
    for cand in $(ls -d "$root"/versions/"$ver".* 2>/dev/null | sort -V -r); do
      [ -x "$cand/bin/python$ver" ] && { echo "$cand/bin/python$ver"; return 0; }
    done
  fi
  if command -v uv >/dev/null 2>&1; then
    cand=$(uv python find "$ver" 2>/dev/null) && [ -n "$cand" ] && { echo "$cand"; return 0; }
  fi
  return 1
}

# make_venv DIR VERSION LOCKFILE
make_venv() {
  local dir=$1 ver=$2 lock=$3 stamp="$1/.lock-sha256" want py
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  py=$(find_python "$ver") || die "需要 Python $ver / Python $ver not found (looked on PATH, in pyenv and uv). Install it, e.g. 'pyenv install $ver'."
  say "creating $dir with $py from $lock (first run takes a few minutes)"
  rm -rf "$dir"
  "$py" -m venv "$dir"
  local log="var/log/pip-$(basename "$dir").log"
  if ! { "$dir/bin/python" -m pip install -q --upgrade pip && \
         "$dir/bin/python" -m pip install -q --no-deps -r "$lock" && \
         "$dir/bin/python" -m pip check; } >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
    die "pip install into $dir failed, full log: $log"
  fi
  echo "$want" >"$stamp"
}

ensure_apt
# The phone tests' Asterisk: ../shared/pbx's build, or where it cannot run on this CPU a portable one
# built once per machine from Debian's source (scripts/pbx.sh; about 20 minutes the first time).
# Only the phone tests need it: without it (not root, say) the rest is set up and those tests say why.
if [ -f "${HEZE_PBX_DIR:-../shared/pbx}/asterisk-20-debian12-x86_64.tar.xz" ]; then
  bash scripts/pbx.sh ensure >/dev/null || say "警告 / warning: no Asterisk for the phone tests (see var/log/pbx-build.log)"
fi
make_venv .venv-rasa 3.10 requirements/rasa.lock
make_venv .venv 3.11 requirements/app.lock
if [ ! -f .env ]; then
  # Empty secrets get random values; nothing secret is ever committed.
  token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  paysecret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  gateway=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  sed -e "s/^RASA_API_TOKEN=\$/RASA_API_TOKEN=$token/" \
      -e "s/^PAYMENT_SANDBOX_SECRET=\$/PAYMENT_SANDBOX_SECRET=$paysecret/" \
      -e "s/^VOICE_GATEWAY_TOKEN=\$/VOICE_GATEWAY_TOKEN=$gateway/" .env.example >.env.tmp
  mv .env.tmp .env
  say "created .env from .env.example (random secrets filled in)"
fi
