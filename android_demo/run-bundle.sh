#!/bin/sh
# Run the arm64 runner with the glibc carried in this folder's lib/, so that no arm64 sysroot is
# needed: on an arm64 Linux machine as it is, elsewhere through qemu-user, named in SBEXPORT_QEMU:
#   ./run --model model.pte --seq-len 128
#   SBEXPORT_QEMU="qemu-aarch64 -cpu cortex-a53" ./run --model model.pte --seq-len 128
# (With qemu-aarch64 registered in binfmt_misc, SBEXPORT_QEMU can stay empty on x86 too.)
here=$(cd "$(dirname "$0")" && pwd)
# SBEXPORT_QEMU is split into words on purpose: a command and its options.
# shellcheck disable=SC2086
exec ${SBEXPORT_QEMU:-} "$here/lib/ld-linux-aarch64.so.1" --library-path "$here/lib" "$here/sbexport_runner" "$@"
