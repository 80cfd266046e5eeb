#!/usr/bin/env bash
# Build the native runner; `make runner` and `make runner-arm64` call this.
#
#   android_demo/build.sh host    -> build/runner-host/sbexport_runner
#                                    against the executorch wheel of $PYTHON's environment
#   android_demo/build.sh arm64   -> build/runner-arm64/bundle/ (sbexport_runner, lib/, run)
#                                    against the manylinux aarch64 executorch wheel, fetched once
#                                    into build/cache/ with pip download
#
# Both link sbexport's kernels in (through the runner's SBEXPORT_EXTRA_KERNEL_LIBS hook): kernels/
# (kernels/build.sh, build/kernels-<kind>) and their ExecuTorch registration, kernels/executorch
# (build/et-kernels-<kind>), which makes the runner run float32 pointwise convolutions left
# outside the delegate (export --grouped-conv runner-kernel) with sbexport's kernel.
#
# Both are idempotent: a second call rebuilds only what changed (CMake's own dependency check)
# and fetches nothing. Environment: PYTHON (default .venv/bin/python; CMake >= 3.28 is taken
# from beside it, pinned as cmake in pyproject's test extra), BUILD_ROOT (default build/).
# Missing prerequisites are one "error:" line and exit 1, naming the make target that installs them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BUILD_ROOT=${BUILD_ROOT:-$ROOT/build}
EXECUTORCH_VERSION=1.5.1    # the version pyproject pins; the arm64 build must match the exporter
AARCH64_SYSROOT=/usr/aarch64-linux-gnu

die() { echo "error: $*" >&2; exit 1; }

[[ $# -eq 1 && ( $1 == host || $1 == arm64 ) ]] || die "usage: android_demo/build.sh host|arm64"
[[ -x $PYTHON ]] || die "no Python at $PYTHON; run make install (or set PYTHON)"
PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")   # absolute, the venv's bin/ kept
CMAKE=$(dirname "$PYTHON")/cmake
[[ -x $CMAKE ]] || die "no cmake beside $PYTHON; run make install (pyproject's test extra pins cmake, which must be >= 3.28)"
command -v c++ >/dev/null || die "no C++ compiler; run make toolchain"
command -v make >/dev/null || die "no make; run make toolchain"

mkdir -p "$BUILD_ROOT"
# One build at a time per build folder: two test sessions may ask at once.
exec 9>"$BUILD_ROOT/.runner-build.lock"
flock 9

configure_and_build() {   # configure_and_build SOURCE_DIR BUILD_DIR CMAKE_ARGS...
    local src=$1 dir=$2; shift 2
    "$CMAKE" -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 \
        || die "CMake configure failed, see $dir.configure.log"
    "$CMAKE" --build "$dir" -j "$(nproc)" >"$dir.build.log" 2>&1 || die "build failed, see $dir.build.log"
}

# The static libraries of sbexport's kernels for the runner of KIND, as SBEXPORT_EXTRA_KERNEL_LIBS
# takes them ("registration.a;kernels.a"): kernels/ by its own script, then kernels/executorch
# against the same ExecuTorch as the runner.
kernel_libs() {   # kernel_libs KIND CMAKE_ARGS...
    local kind=$1 kernels; shift
    kernels=$(PYTHON=$PYTHON BUILD_ROOT=$BUILD_ROOT bash "$ROOT/kernels/build.sh" "$kind") || exit 1   # its one error line
    configure_and_build "$ROOT/kernels/executorch" "$BUILD_ROOT/et-kernels-$kind" "$@"
    echo "$BUILD_ROOT/et-kernels-$kind/libsbexport_et_kernels.a;$kernels/libsbexport_kernels_static.a"
}

build_host() {
    local et libs
    et=$("$PYTHON" -c "import importlib.util as u; s = u.find_spec('executorch'); print(s.submodule_search_locations[0] if s else '')")
    [[ -n $et ]] || die "executorch is not installed in $PYTHON's environment; run make install"
    libs=$(kernel_libs host -Dexecutorch_DIR="$et/share/cmake")
    configure_and_build "$ROOT/android_demo" "$BUILD_ROOT/runner-host" -Dexecutorch_DIR="$et/share/cmake" \
        -DSBEXPORT_EXTRA_KERNEL_LIBS="$libs"
    echo "$BUILD_ROOT/runner-host/sbexport_runner"
}

# The aarch64 wheel's executorch/{lib,include,share}, unpacked once into build/cache/.
fetch_aarch64_wheel() {
    local dest=$BUILD_ROOT/cache/executorch-$EXECUTORCH_VERSION-aarch64
    if [[ ! -f $dest/.complete ]]; then
        local tmp=$dest.partial
        rm -rf "$tmp" && mkdir -p "$tmp"
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
            --python-version 3.11 "executorch==$EXECUTORCH_VERSION" -d "$tmp" 2>"$tmp.log" \
            || die "pip download of the aarch64 executorch $EXECUTORCH_VERSION wheel failed, see $tmp.log"
        "$PYTHON" - "$tmp" <<'EOF' || die "cannot unpack the aarch64 executorch wheel in $tmp"
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
wheel, = tmp.glob("executorch-*.whl")
with zipfile.ZipFile(wheel) as z:
    z.extractall(tmp, [n for n in z.namelist() if n.split("/")[1:2] in (["lib"], ["include"], ["share"])])
wheel.unlink()
EOF
        touch "$tmp/.complete"
        rm -rf "$dest" && mv "$tmp" "$dest"
    fi
    echo "$dest/executorch"
}

# Copy FILE's shared-library dependencies (DT_NEEDED, recursively) into DIR/lib, from the wheel
# first, then the cross toolchain's glibc; the dynamic loader comes with libc.so.6.
bundle_needed() {   # bundle_needed FILE DIR WHEEL_LIB
    local name src
    for name in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [[ -e $2/lib/$name ]] && continue
        src=""
        for dir in "$3" "$AARCH64_SYSROOT/lib" "$AARCH64_SYSROOT/lib64"; do
            [[ -e $dir/$name ]] && { src=$dir/$name; break; }
        done
        [[ -n $src ]] || die "cannot find $name (needed by $1) in the wheel or in $AARCH64_SYSROOT"
        cp -L "$src" "$2/lib/$name"
        bundle_needed "$2/lib/$name" "$2" "$3"
    done
}

build_arm64() {
    command -v aarch64-linux-gnu-g++ >/dev/null || die "no aarch64-linux-gnu-g++; run make toolchain"
    [[ -d $AARCH64_SYSROOT/lib ]] || die "no arm64 glibc in $AARCH64_SYSROOT; run make toolchain"
    local et libs out=$BUILD_ROOT/runner-arm64
    local toolchain=-DCMAKE_TOOLCHAIN_FILE="$ROOT/android_demo/aarch64-linux-gnu.cmake"
    et=$(fetch_aarch64_wheel)
    mkdir -p "$out"
    libs=$(kernel_libs arm64 "$toolchain" -Dexecutorch_DIR="$et/share/cmake")
    configure_and_build "$ROOT/android_demo" "$out/cmake" "$toolchain" -Dexecutorch_DIR="$et/share/cmake" \
        -DSBEXPORT_EXTRA_KERNEL_LIBS="$libs"
    # The bundle is made afresh beside the old one (a few MB of copies), so it is never stale,
    # and replaces it only when they differ: a test worker may call this while another one runs
    # the bundle, and between the removal and the rename there are no libraries to load.
    local bundle=$out/bundle
    rm -rf "$bundle.partial" && mkdir -p "$bundle.partial/lib"
    cp "$out/cmake/sbexport_runner" "$bundle.partial/"
    bundle_needed "$bundle.partial/sbexport_runner" "$bundle.partial" "$et/lib"
    [[ -e $bundle.partial/lib/ld-linux-aarch64.so.1 ]] || cp -L "$AARCH64_SYSROOT/lib/ld-linux-aarch64.so.1" "$bundle.partial/lib/"
    cp "$ROOT/android_demo/run-bundle.sh" "$bundle.partial/run"
    chmod +x "$bundle.partial/run"
    if [[ -d $bundle ]] && diff -rq "$bundle.partial" "$bundle" >/dev/null; then
        rm -rf "$bundle.partial"
    else
        rm -rf "$bundle" && mv "$bundle.partial" "$bundle"
    fi
    echo "$bundle/run"
}

start=$(date +%s%N)
"build_$1"
echo "runner ($1): ready in $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
