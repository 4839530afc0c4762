#!/usr/bin/env bash
# The Asterisk the phone tests place real calls through (tests/pbx.py).
#
#   scripts/pbx.sh path    prints the tarball to use: ../shared/pbx's build when it runs on this CPU,
#                          else the portable build in the cache (an error when there is none yet)
#   scripts/pbx.sh ensure  the same, building the portable one first when it is needed and missing
#
# ../shared/pbx's build (Asterisk 20.20.1) was compiled with Asterisk's BUILD_NATIVE default, for the
# CPU it was built on: its code uses AVX-512, and on a CPU without it (AMD EPYC machines here, seen
# 2026-12-07) Asterisk dies at start with SIGILL. No Asterisk package or prebuilt binary is to be had
# here (not in Debian 12; the internet is closed but for package registries), but Debian's mirror
# carries Asterisk's source (the sid package, the only suite that has it). This builds that source
# with the shared build's configure (system jansson, no pjproject, no XML docs, no sounds) for any
# x86-64 CPU (BUILD_NATIVE off, -march=x86-64), into the shared build's layout, once per machine:
# about 20 minutes on 2 cores; cached in HEZE_PBX_CACHE (default ~/.cache/heze-pbx), outside the
# checkout, so fresh clones and CI on the same machine reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED="${HEZE_PBX_DIR:-$ROOT/../shared/pbx}"
SHARED_TARBALL="$SHARED/asterisk-20-debian12-x86_64.tar.xz"
CACHE="${HEZE_PBX_CACHE:-$HOME/.cache/heze-pbx}"
NAME=asterisk-portable-x86_64
PORTABLE="$CACHE/$NAME.tar.xz"
MIRROR="${HEZE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUILD_DEPS=(build-essential pkg-config libjansson-dev libxml2-dev libxslt1-dev libsqlite3-dev libssl-dev
  libedit-dev uuid-dev libcurl4-openssl-dev zlib1g-dev libncurses-dev patchelf xz-utils curl gpgv debian-archive-keyring)

say() { printf '[pbx] %s\n' "$*" >&2; }
die() { printf '[pbx] error: %s\n' "$*" >&2; exit 1; }

# shared_runs: does the shared build start on this CPU? (A missing configuration makes it stop at
# once where it runs; where it cannot, the kernel stops it with SIGILL first: exit status 132.)
shared_runs() {
  [ -f "$SHARED_TARBALL" ] || return 1
  local probe status
  probe=$(mktemp -d)
  tar -xJf "$SHARED_TARBALL" -C "$probe" asterisk-20-debian12-x86_64/sbin/asterisk asterisk-20-debian12-x86_64/lib \
    || { rm -rf "$probe"; return 1; }
  set +e
  LD_LIBRARY_PATH="$probe/asterisk-20-debian12-x86_64/lib" sh -c 'timeout 10 "$1" -f -n -C "$2" >/dev/null 2>&1' \
    probe "$probe/asterisk-20-debian12-x86_64/sbin/asterisk" "$probe/none.conf" >/dev/null 2>&1
  status=$?
  set -e
  rm -rf "$probe"
  [ "$status" -ne 132 ]
}

build_portable() {
  [ "$(id -u)" -eq 0 ] || die "building Asterisk needs Debian packages: run as root, or apt-get install ${BUILD_DEPS[*]}"
  mkdir -p "$CACHE" "$ROOT/var/log"
  local log="$ROOT/var/log/pbx-build.log" work="${HEZE_PBX_WORK:-$CACHE/build}"
  say "the shared Asterisk build cannot run on this CPU; building a portable one (about 20 minutes, log: $log)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${BUILD_DEPS[@]}" >>"$log" 2>&1 || {
    apt-get update -qq >>"$log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${BUILD_DEPS[@]}" >>"$log" 2>&1 || die "apt-get failed, see $log"; }
  # The source package as Debian's signed index names it now: the Release file is checked against
  # Debian's archive keys (debian-archive-keyring, as apt does), the source index against the Release
  # file's SHA-256, and the tarball against the index's.
  local index orig="" sha="" version sources_sha
  mkdir -p "$work"
  curl -fsS -o "$work/InRelease" "$MIRROR/dists/sid/InRelease" || die "Debian's release file could not be read"
  gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg "$work/InRelease" >>"$log" 2>&1 \
    || die "Debian's release file is not signed by Debian's archive keys"
  sources_sha=$(awk '/^SHA256:/{c=1;next} c&&/^ /{if ($3 == "main/source/Sources.xz") print $1; next} c{exit}' "$work/InRelease")
  curl -fsS -o "$work/Sources.xz" "$MIRROR/dists/sid/main/source/Sources.xz" || die "Debian's source index could not be read"
  echo "$sources_sha  $work/Sources.xz" | sha256sum -c --quiet - || die "Debian's source index differs from the signed release file"
  index=$(xz -dc "$work/Sources.xz" | awk '/^Package: asterisk$/{p=1} p&&/^$/{p=0} p')
  version=$(printf '%s\n' "$index" | awk '/^Version:/{print $2}')
  read -r sha orig < <(printf '%s\n' "$index" | awk '/^Checksums-Sha256:/{c=1;next} c&&/^ /{if ($3 ~ /\.orig\.tar\.xz$/) print $1, $3; next} c{exit}') || true
  [ -n "$orig" ] && [ -n "$sha" ] || die "no Asterisk source in Debian's index"
  say "Asterisk $version from Debian's source package ($orig)"
  if [ ! -f "$work/$orig" ]; then
    curl -fsS -o "$work/$orig.part" "$MIRROR/pool/main/a/asterisk/$orig" || die "could not fetch $orig"
    mv "$work/$orig.part" "$work/$orig"
  fi
  echo "$sha  $work/$orig" | sha256sum -c --quiet - || die "$orig: SHA-256 differs from Debian's index"
  local upstream src
  upstream=${version#*:}
  upstream=${upstream%%+*}
  src="$work/asterisk-$upstream"  # 1:22.10.1+dfsg+~cs… unpacks to asterisk-22.10.1
  [ -d "$src" ] || tar -xJf "$work/$orig" -C "$work"
  [ -d "$src" ] || die "$orig did not unpack to $src"
  (
    cd "$src"
    if [ ! -f main/asterisk ]; then  # (set -e does not hold in a subshell left of ||: each step says so)
      ./configure --prefix=/opt/asterisk --with-jansson --without-pjproject-bundled --without-pjproject \
        --disable-xmldoc CFLAGS="-O2 -march=x86-64 -mtune=generic" >>"$log" 2>&1 || die "configure failed, see $log"
      make menuselect.makeopts >>"$log" 2>&1 || die "menuselect failed, see $log"
      # For any x86-64 CPU; no sounds (nothing downloaded); codec_ilbc's source is not in Debian's tarball.
      menuselect/menuselect --disable BUILD_NATIVE --disable codec_ilbc --disable-category MENUSELECT_CORE_SOUNDS \
        --disable-category MENUSELECT_MOH --disable-category MENUSELECT_EXTRA_SOUNDS menuselect.makeopts >>"$log" 2>&1 \
        || die "menuselect failed, see $log"
      if grep -q '^MENUSELECT_CFLAGS=.*BUILD_NATIVE' menuselect.makeopts; then
        die "BUILD_NATIVE is still on (the build would run only on CPUs like this one)"
      fi
    fi
    make -j"$(nproc)" NOISY_BUILD= >>"$log" 2>&1 || die "make failed, see $log"
    rm -rf "$work/install"
    make install DESTDIR="$work/install" NOISY_BUILD= >>"$log" 2>&1 || die "make install failed, see $log"
  ) || exit 1
  # The shared build's layout: sbin/, lib/ (RUNPATH $ORIGIN/../lib), share/asterisk/, and beside them
  # the launcher, configuration templates and smoke test of ../shared/pbx.
  local pkg="$work/$NAME" inst="$work/install/opt/asterisk"
  rm -rf "$pkg"
  mkdir -p "$pkg/sbin" "$pkg/lib/asterisk/modules" "$pkg/share/asterisk/sounds/en"
  cp "$inst/sbin/asterisk" "$pkg/sbin/"
  cp -P "$inst"/lib/libasteriskssl.so* "$pkg/lib/"
  cp "$inst"/lib/asterisk/modules/*.so "$pkg/lib/asterisk/modules/"
  strip --strip-unneeded "$pkg/sbin/asterisk" "$pkg"/lib/libasteriskssl.so.* "$pkg"/lib/asterisk/modules/*.so
  patchelf --set-rpath '$ORIGIN/../lib' "$pkg/sbin/asterisk"
  for d in images rest-api static-http; do
    [ -d "$inst/var/lib/asterisk/$d" ] && cp -r "$inst/var/lib/asterisk/$d" "$pkg/share/asterisk/"
  done
  tar -xJf "$SHARED_TARBALL" -C "$work" --wildcards 'asterisk-20-debian12-x86_64/share/asterisk/sounds/en/demo-*'
  cp "$work"/asterisk-20-debian12-x86_64/share/asterisk/sounds/en/demo-* "$pkg/share/asterisk/sounds/en/"
  cp -r "$SHARED/conf" "$SHARED/run-asterisk.sh" "$SHARED/smoke_test.py" "$pkg/"
  {
    echo "Asterisk $version, built by the Heze project's scripts/pbx.sh from Debian's source package $orig"
    echo "(sha256 $sha) on $(. /etc/os-release; echo "$PRETTY_NAME") $(uname -m) with $(gcc --version | head -n1)."
    echo "configure: --prefix=/opt/asterisk --with-jansson --without-pjproject-bundled --without-pjproject --disable-xmldoc"
    echo "           CFLAGS=-O2 -march=x86-64 -mtune=generic; menuselect: BUILD_NATIVE off, no sounds, no codec_ilbc."
    echo "Why: ../shared/pbx's build uses AVX-512 (BUILD_NATIVE) and stops with SIGILL on CPUs without it."
    echo "Modules ($(ls "$pkg/lib/asterisk/modules" | wc -l)):"
    ls "$pkg/lib/asterisk/modules" | sed 's/\.so$//' | tr '\n' ' ' | fold -s -w 100
    echo
  } >"$pkg/BUILD-INFO.txt"
  tar -cJf "$PORTABLE.part" -C "$work" "$NAME"
  mv "$PORTABLE.part" "$PORTABLE"
  say "built $PORTABLE"
}

case "${1:-}" in
  path|ensure)
    if shared_runs; then
      echo "$SHARED_TARBALL"
    elif [ -f "$PORTABLE" ]; then
      echo "$PORTABLE"
    elif [ "$1" = ensure ]; then
      mkdir -p "$CACHE"
      exec 9>"$CACHE/.lock"
      flock 9  # one build at a time on this machine (a bootstrap and a CI run, say)
      [ -f "$PORTABLE" ] || build_portable
      echo "$PORTABLE"
    else
      die "the shared Asterisk build cannot run on this CPU and no portable build is cached: run scripts/pbx.sh ensure"
    fi
    ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
