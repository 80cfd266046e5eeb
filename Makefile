# sbexport: install, test, lint, bench. Everything runs in ./.venv, made from this repo's files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench roofline mutate clean toolchain runner runner-arm64 arm64 kernels kernels-arm64 optimum-env

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

# The native runner's tests need the compilers and qemu-user, the adb tests Debian's adb client
# (driven against the device stand-in tests/adb_device.py): `toolchain` installs them first;
# `arm64` sets up verify --target arm64-qemu, which the arm64 parity tests run.
# Two workers, a whole test file each at a time (--dist loadfile: a file's module-scoped fixtures,
# e.g. the adb bench's export cache, stay in one process). The emulated-arm64 and export tests are
# single-threaded, so two workers on two cores halve the wall time; TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: install toolchain arm64 kernels kernels-arm64
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# ruff, pinned in pyproject's test extra; its rules are pyproject's [tool.ruff].
lint: install
	$(BIN)/ruff check sbexport tests benchmarks tools

bench: install
	$(BIN)/python benchmarks/host_comparison.py

# GFLOP/s of each SqueezeBERT projection shape per runtime against the measured ceilings
# (issue 10); ROOFLINE_ARGS="--threads 1" or "--seq-lens 128".
roofline: install
	$(BIN)/sbexport roofline --json benchmarks/results/roofline_$$(date -u +%F).json \
		--plot benchmarks/results/roofline_$$(date -u +%F).png $(ROOFLINE_ARGS)

# The native runner (android_demo/): build.sh caches its builds and the aarch64 wheel under
# build/, so a second call only rebuilds what changed. `make toolchain` installs the compilers and
# qemu-user with apt-get (root only; nothing happens when they are present); CI calls it first.
toolchain:
	bash android_demo/install_toolchain.sh

runner: install
	PYTHON=$(BIN)/python bash android_demo/build.sh host

runner-arm64: install
	PYTHON=$(BIN)/python bash android_demo/build.sh arm64

# kernels/ (the native grouped 1x1 convolution): build/kernels-host/ (the shared library that
# sbexport/kernels.py loads, the static one for the runner, the test driver) and
# build/kernels-arm64/ (cross-compiled, run under qemu-aarch64). Cached: a second call compiles nothing.
kernels: install
	PYTHON=$(BIN)/python bash kernels/build.sh host

kernels-arm64: install toolchain
	PYTHON=$(BIN)/python bash kernels/build.sh arm64

# `sbexport verify --target arm64-qemu`'s setup in build/arm64/: runner/ (the arm64 runner's
# bundle) and python/ (Debian's arm64 Python 3.11 with the aarch64 onnxruntime and numpy wheels,
# fetched once into build/cache/; tools/arm64_python.sh). qemu-aarch64 is called by name: no
# binfmt_misc, no root beyond `make toolchain`'s apt-get.
arm64: install toolchain runner-arm64
	PYTHON=$(BIN)/python bash tools/arm64_python.sh build/arm64/python
	ln -sfn ../runner-arm64/bundle build/arm64/runner

# optimum-onnx, the peer exporter benchmarks/optimum_comparison.py measures against (issue 10),
# in its own environment: it pins transformers < 4.58, older than sbexport's.
OPTIMUM_VENV := build/optimum
optimum-env: $(OPTIMUM_VENV)/bin/optimum-cli
$(OPTIMUM_VENV)/bin/optimum-cli:
	$(PY) -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_VENV)/bin/pip install -q --upgrade pip
	$(OPTIMUM_VENV)/bin/pip install -q torch==2.13.0 optimum-onnx==0.1.0 onnxruntime==1.32.0

# Plant each bug of tools/mutants.toml in a throwaway copy and report those no test catches
# (exit 1 when one survives or the catalogue is stale). MUTATE_ARGS="--only ID,ID" or "--list".
mutate: install arm64
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) artifacts build *.egg-info
