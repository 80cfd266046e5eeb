# sbexport: install, test, lint, bench. Everything runs in ./.venv, made from this repo's files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench mutate clean

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

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/python -m compileall -q sbexport tests tools

bench: install
	$(BIN)/python benchmarks/host_comparison.py

# Plant each bug of tools/mutants.toml in a throwaway copy and report those no test catches
# (exit 1 when one survives or the catalogue is stale). MUTATE_ARGS="--only ID,ID" or "--list".
mutate: install
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) artifacts build *.egg-info
