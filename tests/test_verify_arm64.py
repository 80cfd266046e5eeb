"""verify on an emulated arm64 CPU (`sbexport verify --target arm64-qemu`): the .pte through the
arm64 runner, the .onnx through arm64 ONNX Runtime, both under qemu-aarch64.

Every head's tiny artifact, in both formats, must pass verify's parity rule on a CPU model
without the newer arm64 extensions (cortex-a53) and on one with all qemu emulates (max); a
broken arm64 output must fail; a missing setup must be refused naming `make arm64`. The setup
is a prerequisite, never skipped: `make test` runs `make arm64` first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import HEAD_TASKS
from test_cli import run_main

from sbexport.artifact import read_manifest, write_manifest
from sbexport.errors import SbexportError
from sbexport.targets.arm64 import MAX_SEQ, SETUP_ENV, Arm64Setup, QemuArm64Target
from sbexport.verify import verify_folder

ROOT = Path(__file__).resolve().parents[1]
QEMU_CPUS = ("cortex-a53", "max")   # ARMv8.0 (no dot product, no fp16 arithmetic); everything qemu 7.2 has


@pytest.fixture(scope="session")
def arm64_setup() -> Arm64Setup:
    try:
        return Arm64Setup.find()
    except SbexportError as e:
        pytest.fail(str(e), pytrace=False)


def artifact_of(fmt: str, task_name: str, et_artifact, onnx_artifact) -> Path:
    """The shared tiny artifact of `task_name` from its local checkpoint (tokenizer included, so
    the sweep's real-sentence cases run too)."""
    return et_artifact(task_name) if fmt == "executorch" else onnx_artifact(task_name, local=True)


# --------------------------------------------------------------------------------------
# Parity of every head, both formats, two CPU models
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cpu", QEMU_CPUS)
@pytest.mark.parametrize("fmt", ["executorch", "onnx"])
def test_every_head_passes_on_emulated_arm64(arm64_setup, et_artifact, onnx_artifact, fmt, cpu):
    target = QemuArm64Target(arm64_setup, cpu)
    start = time.perf_counter()
    for task_name in HEAD_TASKS.values():
        folder = artifact_of(fmt, task_name, et_artifact, onnx_artifact)
        before = read_manifest(folder)
        report = verify_folder(folder, target=target, log=lambda _: None)
        worst = max(report.outputs.values(), key=lambda o: o.fraction)
        print(f"{fmt} {cpu} {task_name}: {report.cases} cases, worst {worst.name} {worst.max_abs:.2e} "
              f"({worst.fraction:.1%} of its bound)")
        assert report.passed, report.table()
        assert set(report.outputs) == set(before.outputs)
        # It ran on arm64, in the runtime of the format, on the CPU model asked for.
        runtime = "executorch 1.5.1" if fmt == "executorch" else "onnxruntime 1.32.0"
        assert report.target["arch"] == "aarch64" and report.target["cpu"] == cpu, report.target
        assert report.target["runtime"].startswith(runtime) and report.target["emulated"] is True
        assert read_manifest(folder) == before   # the manifest keeps the host's figures
    print(f"{fmt} on qemu {cpu}: every head in {time.perf_counter() - start:.1f} s")


def test_the_reduced_sweep_keeps_every_kind_of_case(et_artifact, onnx_artifact):
    """Capped at MAX_SEQ tokens, the sweep still has short and long sequences, padded rows and
    real sentences (the tiny files take 64 tokens: the cap shortens only the longest cases)."""
    from sbexport.artifact import open_artifact
    from sbexport.tasks import get_task
    from sbexport.verify import rebuild_reference, sweep

    for folder in (et_artifact("mnli"), onnx_artifact("mnli", local=True)):
        manifest = open_artifact(folder)
        task = get_task(manifest.task)
        config = rebuild_reference(folder, manifest, task).config
        full = list(sweep(task, manifest.dims, config, folder))
        reduced = list(sweep(task, manifest.dims, config, folder, max_seq=MAX_SEQ))
        assert len(reduced) == len(full)
        lengths = {feeds["input_ids"].shape[-1] for feeds in reduced}
        assert max(lengths) == MAX_SEQ and 1 in lengths and 7 in lengths
        assert any((feeds["attention_mask"] == 0).any() for feeds in reduced)


# --------------------------------------------------------------------------------------
# Through the CLI, once per format
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, cpu", [("executorch", None), ("onnx", "max")])
def test_cli_verify_on_arm64(arm64_setup, et_artifact, onnx_artifact, fmt, cpu, monkeypatch, capsys, tmp_path):
    folder = artifact_of(fmt, "squad", et_artifact, onnx_artifact)
    cpu_args = ["--cpu", cpu] if cpu else []
    code, out, err = run_main(monkeypatch, capsys, "verify", folder, "--target", "arm64-qemu", *cpu_args,
                              "--json", tmp_path / "report.json")
    assert code == 0 and err == "", err
    cpu = cpu or "cortex-a53"   # the default: the model without the newer extensions
    assert out.splitlines()[0].startswith(f"ran on arm64-qemu (qemu -cpu {cpu}, emulated)"), out
    assert "PASS" in out.splitlines()[-1]
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema"] == "sbexport.verify/2" and data["passed"] is True
    assert data["target"]["name"] == "arm64-qemu" and data["target"]["cpu"] == cpu
    assert data["target"]["arch"] == "aarch64" and data["target"]["max_seq"] == MAX_SEQ
    assert set(data["outputs"]) == {"start_logits", "end_logits"}


# --------------------------------------------------------------------------------------
# A wrong arm64 output fails
# --------------------------------------------------------------------------------------

# Added to an output. The tiny artifacts' outputs have scales up to about 5 (ner logits 1.9), so
# their bounds are at most 1e-6 + 2e-5 x 5 = 1e-4: this is 10 bounds or more, yet far below what
# changes an argmax. The arm64 errors measured: at most 7.2e-7 (fill-mask logits, both CPUs).
PERTURBATION = 1e-3


def test_a_perturbed_onnx_output_fails_on_arm64(arm64_setup, onnx_artifact, tmp_path, monkeypatch, capsys):
    """The .onnx with PERTURBATION added to its first output in the graph (manifest re-hashed):
    the arm64 outputs are compared with PyTorch, not taken as they come."""
    folder = tmp_path / "mnli-onnx"
    shutil.copytree(onnx_artifact("mnli", local=True), folder)
    manifest = read_manifest(folder)
    model = onnx.load(str(folder / manifest.model_file))
    graph = model.graph
    first = graph.output[0].name
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(PERTURBATION, np.float32), "perturbation"))
    for node in graph.node:                       # the node that made the output now makes "raw"
        node.output[:] = ["raw" if name == first else name for name in node.output]
    graph.node.append(onnx.helper.make_node("Add", ["raw", "perturbation"], [first]))
    onnx.save(model, str(folder / manifest.model_file))
    write_manifest(folder, manifest)
    code, out, err = run_main(monkeypatch, capsys, "verify", folder, "--target", "arm64-qemu")
    assert code == 1 and "FAIL" in out, out
    assert err.startswith("error: ") and "parity FAILED for mnli: logits differs from PyTorch" in err, err


def tampering_setup(tmp_path: Path, arm64_setup: Arm64Setup, code: str) -> Path:
    """A setup folder (for SBEXPORT_ARM64_DIR) with the real arm64 Python and a runner that runs
    the real one, then `code` on its output folder (argv[1]): a runner whose outputs are wrong."""
    fake = tmp_path / "setup"
    (fake / "runner").mkdir(parents=True)
    (fake / "python").symlink_to(arm64_setup.prefix)
    script = fake / "runner" / "run"
    script.write_text(f'#!/bin/sh\n"{arm64_setup.runner}" "$@" || exit $?\n'
                      f'while [ $# -gt 0 ]; do [ "$1" = --output-dir ] && out=$2; shift; done\n'
                      f'exec "{sys.executable}" -c "{code}" "$out"\n')
    script.chmod(0o755)
    return fake


def test_a_wrong_arm64_runner_output_fails(arm64_setup, et_artifact, tmp_path, monkeypatch):
    """A setup (SBEXPORT_ARM64_DIR, made here) whose runner runs the real one and then adds
    PERTURBATION to its first output file."""
    perturb = (f"import sys, numpy; p = sys.argv[1] + '/output_0.npy'; "
               f"numpy.save(p, numpy.load(p) + numpy.float32({PERTURBATION}))")
    monkeypatch.setenv(SETUP_ENV, str(tampering_setup(tmp_path, arm64_setup, perturb)))
    report = verify_folder(et_artifact("ner"), target=QemuArm64Target.open("cortex-a53"), log=lambda _: None)
    assert not report.passed and report.outputs["logits"].fraction > 1, report.table()
    with pytest.raises(SbexportError, match="parity FAILED for ner: logits differs"):
        report.raise_on_failure()


# --------------------------------------------------------------------------------------
# Refusals: one line naming what to do
# --------------------------------------------------------------------------------------

def test_missing_setup_is_refused_naming_make_arm64(et_artifact, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(SETUP_ENV, str(tmp_path / "empty"))
    code, out, err = run_main(monkeypatch, capsys, "verify", et_artifact("mnli"), "--target", "arm64-qemu")
    assert code == 1 and out == ""
    assert err.splitlines() == [f"error: the arm64 setup in {tmp_path / 'empty'} is missing the arm64 runner "
                                f"(runner/run): run `make arm64`"]


def test_missing_qemu_is_refused_naming_make_arm64(et_artifact, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))   # no qemu-aarch64 there
    code, out, err = run_main(monkeypatch, capsys, "verify", et_artifact("mnli"), "--target", "arm64-qemu")
    assert code == 1 and out == ""
    assert err.splitlines() == ["error: --target arm64-qemu needs qemu-aarch64, which is not installed: "
                                "run `make arm64`"]


@pytest.mark.parametrize("args, phrase", [
    (["--target", "arm64-qemu", "--cpu", "cortex-a99"], "qemu-aarch64 has no CPU model 'cortex-a99'; it has "),
    (["--cpu", "max"], "--cpu chooses an emulated CPU model: it applies to --target arm64-qemu only"),
])
def test_a_cpu_model_that_cannot_apply_is_refused(arm64_setup, et_artifact, monkeypatch, capsys, args, phrase):
    code, out, err = run_main(monkeypatch, capsys, "verify", et_artifact("mnli"), *args)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: {phrase}"), err


SETUP_SCRIPT = ROOT / "tools" / "arm64_python.sh"


def test_setup_does_nothing_when_complete(arm64_setup):
    proc = subprocess.run(["bash", str(SETUP_SCRIPT), str(arm64_setup.prefix)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert proc.returncode == 0 and "already in" in proc.stdout and proc.stderr == "", proc.stderr


def test_setup_refuses_without_qemu(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dirname").symlink_to(shutil.which("dirname"))   # all the script runs before the check
    proc = subprocess.run(["/bin/bash", str(SETUP_SCRIPT), str(tmp_path / "python")], capture_output=True,
                          text=True, env={"PATH": str(tmp_path / "bin"), "PYTHON": sys.executable}, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: no qemu-aarch64; run make toolchain (Debian's qemu-user)"]
    assert not (tmp_path / "python").exists()


def test_setup_refuses_without_apt(tmp_path):
    """Debian's arm64 Python comes from apt-get download: elsewhere, one line saying so."""
    (tmp_path / "bin").mkdir()
    for tool in ("dirname", "qemu-aarch64"):   # qemu present, apt-get and dpkg-deb not
        (tmp_path / "bin" / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run(["/bin/bash", str(SETUP_SCRIPT), str(tmp_path / "python")], capture_output=True,
                          text=True, env={"PATH": str(tmp_path / "bin"), "PYTHON": sys.executable}, timeout=60)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("error: the arm64 Python is made from Debian packages: needs apt-get"), proc.stderr
    assert not (tmp_path / "python").exists()
