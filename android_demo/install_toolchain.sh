#!/usr/bin/env bash
# Install the Debian packages the native runner's builds and arm64 tests need:
#   g++ and make                 the host build (CMake itself comes from PyPI, pinned in pyproject)
#   g++-aarch64-linux-gnu        the arm64 Linux cross build, and glibc's arm64 loader and libraries
#                                (/usr/aarch64-linux-gnu/lib) that the self-contained bundle carries
#   qemu-user                    qemu-aarch64, which runs that bundle on emulated arm64 CPUs
#   adb                          Debian's adb client (1.0.41): the tests drive it against the device
#                                stand-in tests/adb_device.py
# Nothing is done when every package is present already (no apt-get update, no root needed).
# Refuses with one line, exit 1, where it cannot work: not root, or no apt-get.
set -euo pipefail

# SBEXPORT_TOOLCHAIN_PACKAGES replaces the list (the tests use it to reach the refusals).
read -r -a PACKAGES <<<"${SBEXPORT_TOOLCHAIN_PACKAGES:-g++ make g++-aarch64-linux-gnu qemu-user adb}"

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg-query prints "install ok installed" for an installed package; anything else is missing.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "toolchain: ${PACKAGES[*]} already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: make toolchain needs apt-get (Debian/Ubuntu) to install ${missing[*]}; install them with your system's package manager" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "error: make toolchain must run as root to apt-get install ${missing[*]} (try: sudo make toolchain)" >&2
    exit 1
fi

echo "toolchain: installing ${missing[*]}"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "toolchain: installed in $(( $(date +%s) - start )) s"
