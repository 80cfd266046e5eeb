#!/usr/bin/env bash
# Build kernels/ (the grouped 1x1 convolution); `make kernels` and `make kernels-arm64` call this.
#
#   kernels/build.sh host    -> build/kernels-host/  (libsbexport_kernels.so, the static library,
#                               sbk_driver)
#   kernels/build.sh arm64   -> build/kernels-arm64/ (the same, cross-compiled with
#                               android_demo/aarch64-linux-gnu.cmake; run under qemu-aarch64)
#
# Idempotent: configured once, then CMake's own dependency check rebuilds only what changed (a
# second call compiles nothing). Environment: PYTHON (default .venv/bin/python: the cmake beside
# it, pinned in pyproject's test extra, is preferred; else cmake on PATH), BUILD_ROOT (default
# build/). Missing prerequisites are one "error:" line and exit 1, naming the make target.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BUILD_ROOT=${BUILD_ROOT:-$ROOT/build}

die() { echo "error: $*" >&2; exit 1; }

[[ $# -eq 1 && ( $1 == host || $1 == arm64 ) ]] || die "usage: kernels/build.sh host|arm64"
CMAKE=$(dirname "$PYTHON")/cmake
[[ -x $CMAKE ]] || CMAKE=$(command -v cmake) || die "no cmake; run make install"
command -v make >/dev/null || die "no make; run make toolchain"

args=()
if [[ $1 == arm64 ]]; then
    command -v aarch64-linux-gnu-g++ >/dev/null || die "no aarch64-linux-gnu-g++; run make toolchain"
    args=(-DCMAKE_TOOLCHAIN_FILE="$ROOT/android_demo/aarch64-linux-gnu.cmake")
else
    command -v c++ >/dev/null || die "no C++ compiler; run make toolchain"
fi

dir=$BUILD_ROOT/kernels-$1
mkdir -p "$BUILD_ROOT"
# One build at a time per build folder: two test sessions may ask at once.
exec 9>"$dir.lock"
flock 9
if [[ ! -f $dir/CMakeCache.txt ]]; then
    "$CMAKE" -S "$ROOT/kernels" -B "$dir" -DCMAKE_BUILD_TYPE=Release "${args[@]}" >"$dir.configure.log" 2>&1 \
        || { rm -f "$dir/CMakeCache.txt"; die "CMake configure failed, see $dir.configure.log"; }
fi
"$CMAKE" --build "$dir" -j "$(nproc)" >"$dir.build.log" 2>&1 || die "build failed, see $dir.build.log"
echo "$dir"
