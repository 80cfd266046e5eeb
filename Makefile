# sbexport: install, test, lint, bench. Everything runs in ./.venv, made from this repo's files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean toolchain runner runner-arm64 adb-tools

# torch==2.13.0 is pinned in pyproject.toml: on the project's machines pip takes its CPU build
# from disk; a looser spec would pull a multi-GB CUDA build.
install: $(BIN)/sbexport
$(BIN)/sbexport: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The main job: export the MNLI classifier to ONNX and verify it against PyTorch.
demo: install
	$(BIN)/sbexport onnx --task mnli --random-init --overwrite -o artifacts/mnli-onnx

# The native runner's tests need the compilers and qemu-user: `toolchain` installs them first;
# the adb tests need Debian's adb client: `adb-tools`.
test: install toolchain adb-tools
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/python -m compileall -q sbexport tests

bench: install
	$(BIN)/python benchmarks/host_comparison.py

# The native runner (android_demo/): build.sh caches its builds and the aarch64 wheel under
# build/, so a second call only rebuilds what changed. `make toolchain` installs the compilers and
# qemu-user with apt-get (root only; nothing happens when they are present); CI calls it first.
toolchain:
	bash android_demo/install_toolchain.sh

runner: install
	PYTHON=$(BIN)/python bash android_demo/build.sh host

runner-arm64: install
	PYTHON=$(BIN)/python bash android_demo/build.sh arm64

# Debian's adb client (1.0.41): tests/test_adb_device.py drives it against the device stand-in
# tests/adb_device.py, so a missing adb is a test failure. Installs it where it is missing
# (root and apt-get needed), refuses with what to do otherwise; nothing to do when adb is on PATH.
adb-tools:
	@if command -v adb >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "error: adb is not installed and installing it needs root and apt-get:" \
		     "run 'sudo make adb-tools' (Debian/Ubuntu) or put Android platform-tools' adb on PATH" >&2; \
		exit 1; \
	fi; \
	echo "adb-tools: installing adb"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends adb >/dev/null && \
	adb version | head -1

clean:
	rm -rf $(VENV) artifacts build *.egg-info
