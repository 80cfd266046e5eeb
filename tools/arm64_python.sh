#!/usr/bin/env bash
# Make the arm64 Python that `sbexport verify --target arm64-qemu` runs ONNX Runtime in:
#
#   tools/arm64_python.sh DIR   -> DIR/usr/bin/python3.11 (Debian bookworm's arm64 build, with
#                                  its own glibc and loader under DIR/lib) and DIR/site/ holding
#                                  the manylinux aarch64 wheels of onnxruntime and numpy
#
# Debian's arm64 packages are fetched with `apt-get download` through a private apt state under
# build/cache/apt-arm64 (its own lists, architecture arm64 only): the system's dpkg and apt
# configuration are left as they are, no `dpkg --add-architecture`, no root. The wheels are the
# versions installed in $PYTHON's environment (pinned in pyproject), so arm64 runs what the host
# runs. Idempotent: DIR/.complete records what was installed; a second call with the same
# versions does nothing. Missing prerequisites are one "error:" line and exit 1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${CACHE:-$ROOT/build/cache}
# python3.11-minimal and its stdlib, with every shared library they and the wheels load
# (glibc, libgcc_s and libstdc++ for onnxruntime, zlib/expat/ffi for the stdlib's modules).
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8"

die() { echo "error: $*" >&2; exit 1; }

[[ $# -eq 1 && -n $1 ]] || die "usage: tools/arm64_python.sh DIR"
DEST=$1
[[ -x $PYTHON ]] || die "no Python at $PYTHON; run make install (or set PYTHON)"
command -v qemu-aarch64 >/dev/null || die "no qemu-aarch64; run make toolchain (Debian's qemu-user)"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "the arm64 Python is made from Debian packages: needs apt-get and dpkg-deb (Debian/Ubuntu)"

versions=$("$PYTHON" -c "import numpy, onnxruntime; print(f'onnxruntime=={onnxruntime.__version__} numpy=={numpy.__version__}')") \
    || die "onnxruntime and numpy are not installed in $PYTHON's environment; run make install"
stamp="python3.11 bookworm arm64; $versions"
if [[ -f $DEST/.complete && $(cat "$DEST/.complete") == "$stamp" ]]; then
    echo "arm64 python: $stamp already in $DEST"
    exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.arm64-python.lock"   # one setup at a time: two make runs may ask at once
flock 9

start=$(date +%s)
apt_state=$CACHE/apt-arm64
mkdir -p "$apt_state/lists/partial" "$apt_state/archives/partial" "$apt_state/debs"
touch "$apt_state/status"
apt_opts=(-q -o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache=$apt_state" -o "Dir::State::status=$apt_state/status"
          -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1)
apt-get "${apt_opts[@]}" update >"$apt_state/update.log" 2>&1 \
    || die "apt-get update of the arm64 package lists failed, see $apt_state/update.log"
(cd "$apt_state/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" download $(printf '%s:arm64 ' $DEBS)) \
    >"$apt_state/download.log" 2>&1 || die "apt-get download of $DEBS (arm64) failed, see $apt_state/download.log"

tmp=$DEST.partial
rm -rf "$tmp" && mkdir -p "$tmp"
for deb in "$apt_state"/debs/*.deb; do
    dpkg-deb -x "$deb" "$tmp" || die "cannot unpack $deb"
done
# shellcheck disable=SC2086
"$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$tmp/site" \
    --platform manylinux_2_28_aarch64 --python-version 3.11 --only-binary=:all: $versions >"$tmp.pip.log" 2>&1 \
    || die "pip install of the aarch64 wheels ($versions) failed, see $tmp.pip.log"
echo "$stamp" >"$tmp/.complete"
rm -rf "$DEST" && mv "$tmp" "$DEST" && rm -f "$tmp.pip.log"
echo "arm64 python: $stamp in $DEST ($(( $(date +%s) - start )) s)"
