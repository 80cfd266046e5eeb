# CMake toolchain file: arm64 Linux (glibc) with Debian's cross compiler (g++-aarch64-linux-gnu,
# installed by `make toolchain`). The sysroot is the cross toolchain's /usr/aarch64-linux-gnu;
# ExecuTorch itself is found through -Dexecutorch_DIR (the unpacked aarch64 wheel), outside it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
