"""The native runner (android_demo/runner.cpp), built by the project's own script for the host
(against the x86_64 executorch wheel) and for arm64 Linux (against the aarch64 wheel, run under
qemu-aarch64 on CPU models with and without the newer arm64 extensions).

Each head's tiny .pte must compute what PyTorch computes over verify's sweep, its JSON report
must hold what the schema promises, and every bad input must give one line on stderr and a
non-zero exit. The builds are prerequisites, never skipped: CI installs the toolchain (`make
toolchain`), and a missing compiler, CMake or qemu fails here naming the command that installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HEAD_TASKS

from sbexport.artifact import open_artifact
from sbexport.errors import SbexportError
from sbexport.targets.runner import ROOT, NativeRunner, build_runner, qemu_runner
from sbexport.targets.runner import run_case as run_runner_case
from sbexport.tasks import INPUT_NAMES, get_task
from sbexport.verify import rebuild_reference, reference_outputs, sweep

# Largest |runner - PyTorch| allowed on any output value, padded positions included, for the
# tiny perturbed models of conftest (outputs up to about 5 in magnitude). Measured over verify's
# sweep (batch 1; sequence 1, 7, 64 and real sentences), worst output per head, Intel kind:
#   host x86_64:      mnli 8.9e-8, squad 3.6e-7, ner 4.8e-7, swag 1.5e-7, fill-mask 7.2e-7, features 9.5e-7
#   qemu cortex-a53:  mnli 1.2e-7, squad 2.4e-7, ner 4.8e-7, swag 9.7e-8, fill-mask 8.3e-7, features 7.2e-7
#   qemu max:         mnli 1.2e-7, squad 2.4e-7, ner 3.6e-7, swag 1.2e-7, fill-mask 8.3e-7, features 7.2e-7
# 1e-5 is 10x the worst (9.5e-7): margin for the AMD kind's AVX2 kernels on the host (emulated
# arm64 arithmetic is the same on either kind). A runner that feeds an input wrongly or reads an
# output wrongly is off by 1e-2 to 1 on these perturbed models, far above.
RUNNER_ATOL = 1e-5

# One CPU model without the newer extensions (ARMv8.0: no dot product, no fp16 arithmetic) and
# one with all that qemu 7.2 emulates (up to ARMv8.5 with SVE2): XNNPACK picks different kernels.
QEMU_CPUS = ("cortex-a53", "max")


# --------------------------------------------------------------------------------------
# Building and running
# --------------------------------------------------------------------------------------

def build(kind: str) -> Path:
    """Build the runner (sbexport.targets.runner.build_runner, cached under build/); its path,
    or a test failure carrying the script's one-line reason (e.g. "run make toolchain")."""
    try:
        return build_runner(kind)
    except SbexportError as e:
        pytest.fail(str(e), pytrace=False)


Runner = NativeRunner


@pytest.fixture(scope="session")
def host_runner() -> Runner:
    return Runner([str(build("host"))])


@pytest.fixture(scope="session")
def arm64_bundle() -> Path:
    """The arm64 bundle's `run` script (runner, the wheel's libraries, glibc and its loader)."""
    if shutil.which("qemu-aarch64") is None:
        pytest.fail("qemu-aarch64 is not installed: run `make toolchain`", pytrace=False)
    return build("arm64")


def run_case(runner: Runner, pte: Path, feeds: dict[str, np.ndarray], folder: Path) -> tuple[dict, list[np.ndarray]]:
    """Run one input case through the runner with .npy files on one thread; (its JSON report,
    its outputs). A failure or anything on stderr fails the test."""
    try:
        result = run_runner_case(runner, pte, feeds, folder, threads=1)
    except SbexportError as e:
        pytest.fail(str(e), pytrace=False)
    assert result.stderr == "", f"{runner.name}: {result.stderr}"
    return result.report, result.outputs


def parity(runner: Runner, artifact: Path, tmp_path: Path) -> dict[str, float]:
    """Worst |runner - PyTorch| per output over verify's sweep of `artifact`."""
    manifest = open_artifact(artifact)
    task = get_task(manifest.task)
    reference = rebuild_reference(artifact, manifest, task)
    worst: dict[str, float] = {}
    for index, feeds in enumerate(sweep(task, manifest.dims, reference.config, artifact)):
        with torch.no_grad():
            expected = reference_outputs(reference, task, feeds)
        _, got = run_case(runner, artifact / manifest.model_file, feeds, tmp_path / f"case{index}")
        assert len(got) == len(expected), f"{runner.name}: {len(got)} outputs, PyTorch gives {len(expected)}"
        for name, ref, out in zip(task.outputs, expected, got):
            assert out.shape == ref.shape and out.dtype == np.float32, \
                f"{name}: {out.shape} {out.dtype}, PyTorch {ref.shape}"
            error = float(np.abs(out.astype(np.float64) - ref).max()) if np.isfinite(out).all() else float("inf")
            worst[name] = max(worst.get(name, 0.0), error)
    assert worst, "the sweep ran no case"
    return worst


# --------------------------------------------------------------------------------------
# Parity on the host and on emulated arm64
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", HEAD_TASKS.values())
def test_host_runner_matches_pytorch(host_runner, et_artifact, task_name, tmp_path):
    worst = parity(host_runner, et_artifact(task_name), tmp_path)
    print(f"host {task_name}: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    assert max(worst.values()) <= RUNNER_ATOL, worst


@pytest.mark.parametrize("cpu", QEMU_CPUS)
def test_arm64_runner_matches_pytorch_under_qemu(arm64_bundle, et_artifact, cpu, tmp_path):
    """Every head on one emulated CPU model (about 1 s per case under qemu)."""
    runner = qemu_runner(arm64_bundle, cpu)
    start = time.perf_counter()
    for task_name in HEAD_TASKS.values():
        worst = parity(runner, et_artifact(task_name), tmp_path / task_name)
        print(f"qemu {cpu} {task_name}: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
        assert max(worst.values()) <= RUNNER_ATOL, (task_name, worst)
    print(f"qemu {cpu}: every head in {time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize("form", ["split per projection", "shared splits"])
def test_runners_run_the_per_group_program(host_runner, arm64_bundle, et_artifact, shared_splits_artifact, form,
                                           tmp_path):
    """`executorch --grouped-conv per-group` (export/layout.py: one dense convolution per group),
    with every group count different (a split per grouped projection) and with SqueezeBERT's
    pattern (shared splits, the intermediate's groups fed to the output uncatenated): the same
    bound on the host and on each emulated CPU, whose XNNPACK runs other kernels."""
    artifact = et_artifact("features", grouped_conv="per-group") if form == "split per projection" \
        else shared_splits_artifact
    runners = [("host", host_runner)] + [(f"qemu-{cpu}", qemu_runner(arm64_bundle, cpu)) for cpu in QEMU_CPUS]
    for name, runner in runners:
        worst = parity(runner, artifact, tmp_path / name)
        print(f"{name} per-group features ({form}): " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
        assert max(worst.values()) <= RUNNER_ATOL, (name, worst)


def test_cpu_models_take_different_kernel_paths(arm64_bundle, et_artifact, tmp_path):
    """The two CPU models are worth testing apart: XNNPACK picks different kernels for them, so
    their outputs differ in the last bits (measured: fnv1a64 of the fill-mask logits differs)."""
    artifact = et_artifact("fill-mask")
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 99, (1, 24), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    bits = {cpu: run_case(qemu_runner(arm64_bundle, cpu), artifact / "model.pte", feeds, tmp_path / cpu)[0]
            ["outputs"][0]["checksum"]["fnv1a64"] for cpu in QEMU_CPUS}
    assert len(set(bits.values())) == len(QEMU_CPUS), bits


def test_arm64_bundle_runs_from_anywhere_without_a_sysroot(arm64_bundle, et_artifact, tmp_path):
    """The bundle carries its own glibc and loader: copied elsewhere, with no arm64 sysroot on
    qemu's search path (QEMU_LD_PREFIX pointed at an empty folder), it still runs."""
    moved = tmp_path / "moved"
    shutil.copytree(arm64_bundle.parent, moved)
    assert (moved / "lib" / "ld-linux-aarch64.so.1").is_file()
    (tmp_path / "empty").mkdir()
    runner = Runner([str(moved / "run")], {"SBEXPORT_QEMU": f"qemu-aarch64 -cpu {QEMU_CPUS[0]}",
                                           "QEMU_LD_PREFIX": str(tmp_path / "empty")})
    proc = runner.run("--model", et_artifact("mnli") / "model.pte", "--seq-len", 8, "--runs", 1, "--warmup", 0)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["arch"] == "aarch64" and report["outputs"][0]["shape"] == [1, 3]


def test_a_build_that_changes_nothing_leaves_the_arm64_bundle_in_place(arm64_bundle):
    """Test workers build the runner while other workers run the bundle: a build whose bundle is
    the same keeps the folder and every file in it (the same inodes). Remade each time, it had a
    moment with no libraries in it, and a qemu run starting then failed with "libstdc++.so.6:
    cannot open shared object file" (CI on the Intel kind, stop 24)."""
    def inodes() -> dict[str, int]:
        return {str(p.relative_to(arm64_bundle.parent)): p.stat().st_ino
                for p in [arm64_bundle.parent, *arm64_bundle.parent.rglob("*")]}

    before = inodes()
    assert build("arm64") == arm64_bundle
    assert inodes() == before


# --------------------------------------------------------------------------------------
# The JSON report
# --------------------------------------------------------------------------------------

def test_report_holds_what_the_schema_promises(host_runner, et_artifact, tmp_path):
    pte = et_artifact("features") / "model.pte"
    proc = host_runner.run("--model", pte, "--seq-len", 16, "--warmup", 2, "--runs", 7, "--threads", 1,
                           "--output-dir", tmp_path / "out")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    report = json.loads(proc.stdout)
    # The keys are an interface (verify on a device and bench over adb read them): pinned here.
    assert list(report) == ["schema", "model", "method", "arch", "executorch_version", "threads", "inputs",
                            "load_ms", "first_run_ms", "warmup", "runs", "run_ms", "stats_ms", "peak_rss_kb",
                            "outputs"]
    assert report["schema"] == "sbexport.runner/1"
    assert report["model"] == str(pte) and report["method"] == "forward"
    assert report["arch"] == "x86_64" and report["executorch_version"].startswith("1.5.1")
    assert report["threads"] == 1
    assert [i["shape"] for i in report["inputs"]] == [[1, 16]] * 3
    assert {i["dtype"] for i in report["inputs"]} == {"int64"} and {i["source"] for i in report["inputs"]} == {"made"}
    assert report["warmup"] == 2 and report["runs"] == 7 and len(report["run_ms"]) == 7
    assert report["load_ms"] > 0 and report["first_run_ms"] > 0 and all(t > 0 for t in report["run_ms"])
    stats = report["stats_ms"]
    runs = sorted(report["run_ms"])
    # Nearest rank over 7 runs: p50 is the 4th value, p90 and p99 the 7th.
    assert (stats["min"], stats["p50"], stats["p90"], stats["p99"], stats["max"]) == \
        (runs[0], runs[3], runs[6], runs[6], runs[6])
    assert stats["mean"] == pytest.approx(sum(runs) / 7, abs=1e-3)
    # The runner maps a 50-200 kB program and the 14 MB of ExecuTorch's libraries.
    assert 5_000 < report["peak_rss_kb"] < 2_000_000
    hidden = 32
    assert [o["shape"] for o in report["outputs"]] == [[1, 16, hidden], [1, hidden]]
    for index, summary in enumerate(report["outputs"]):
        written = np.load(summary["file"])
        assert list(written.shape) == summary["shape"] and summary["dtype"] == "float32"
        wide = written.astype(np.float64)
        assert summary["checksum"]["sum"] == pytest.approx(float(wide.sum()), rel=1e-12, abs=1e-12)
        assert summary["checksum"]["abs_sum"] == pytest.approx(float(np.abs(wide).sum()), rel=1e-12)
        assert summary["checksum"]["fnv1a64"] == fnv1a64(written.tobytes())
        assert summary["file"] == str(tmp_path / "out" / f"output_{index}.npy")


def fnv1a64(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def test_threads_size_executorchs_pool(host_runner, et_artifact):
    pte = et_artifact("mnli") / "model.pte"
    for threads in (1, 3):
        report = json.loads(host_runner.run("--model", pte, "--seq-len", 8, "--runs", 1, "--threads", threads).stdout)
        assert report["threads"] == threads
    # 0 keeps ExecuTorch's own choice: one thread per processor cpuinfo counts, at most 63
    # (2 on the project's 2-core machines; cpuinfo may count processors differently from Python).
    default = json.loads(host_runner.run("--model", pte, "--seq-len", 8, "--runs", 1).stdout)
    assert 1 <= default["threads"] <= 63


def test_made_inputs_follow_the_documented_recipe(host_runner, et_artifact, tmp_path):
    """Made inputs: ids uniform in [1, vocab) from --seed, a full mask, zero token types. With
    --vocab 2 every id is 1, so the run must equal one fed those arrays from .npy files."""
    artifact = et_artifact("ner")
    pte = artifact / "model.pte"
    made = json.loads(host_runner.run("--model", pte, "--batch", 1, "--seq-len", 9, "--vocab", 2, "--runs", 1,
                                      "--threads", 1).stdout)
    ones = np.ones((1, 9), np.int64)
    fed, _ = run_case(host_runner, pte, {"input_ids": ones, "attention_mask": ones,
                                         "token_type_ids": np.zeros((1, 9), np.int64)}, tmp_path / "fed")
    assert made["outputs"][0]["checksum"]["fnv1a64"] == fed["outputs"][0]["checksum"]["fnv1a64"]
    # Different seeds make different ids; one seed, the same ids.
    runs = [host_runner.run("--model", pte, "--seq-len", 9, "--seed", seed, "--runs", 1, "--threads", 1)
            for seed in (1, 1, 2)]
    sums = [json.loads(run.stdout)["outputs"][0]["checksum"]["fnv1a64"] for run in runs]
    assert sums[0] == sums[1] != sums[2]


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_npy_format_version_is_read(host_runner, et_artifact, tmp_path, version):
    pte = et_artifact("mnli") / "model.pte"
    ids = np.arange(1, 12, dtype=np.int64).reshape(1, 11)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    reference, _ = run_case(host_runner, pte, feeds, tmp_path / "v1")
    args = []
    for name in INPUT_NAMES:
        with open(tmp_path / f"{name}.npy", "wb") as f:
            np.lib.format.write_array(f, feeds[name], version=version)
        args += ["--input", tmp_path / f"{name}.npy"]
    proc = host_runner.run("--model", pte, *args, "--runs", 1, "--threads", 1)
    assert proc.returncode == 0, proc.stderr
    assert [o["checksum"] for o in json.loads(proc.stdout)["outputs"]] == [o["checksum"] for o in reference["outputs"]]


# --------------------------------------------------------------------------------------
# Bad input: one line on stderr, a non-zero exit, nothing on stdout
# --------------------------------------------------------------------------------------

def _npy(tmp: Path, name: str, array: np.ndarray) -> Path:
    np.save(tmp / name, array)
    return tmp / name


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _three(tmp: Path, last: Path) -> list:
    """Two good int64 [1, 8] inputs, then `last`."""
    ok = _npy(tmp, "ok.npy", np.ones((1, 8), np.int64))
    return ["--input", ok, "--input", ok, "--input", last]


def _cut_npy(tmp: Path) -> Path:
    whole = _npy(tmp, "whole.npy", np.ones((1, 8), np.int64)).read_bytes()
    return _write(tmp / "cut.npy", whole[:-8])


# Case -> (arguments made from (tmp_path, a good .pte), exit status, a phrase of the error line).
# The .pte is the tiny mnli program: 3 int64 inputs of at most [1, 64], 99 embeddings.
BAD_CASES = {
    "no model flag": (lambda t, p: [], 2, "--model is required"),
    "unknown flag": (lambda t, p: ["--model", p, "--fast"], 2, "unknown option '--fast'"),
    "flag without value": (lambda t, p: ["--model", p, "--runs"], 2, "--runs needs a value"),
    "zero runs": (lambda t, p: ["--model", p, "--runs", 0], 2, "--runs takes an integer"),
    "negative threads": (lambda t, p: ["--model", p, "--threads", -1], 2, "--threads takes an integer"),
    "too many threads": (lambda t, p: ["--model", p, "--threads", 100000], 2, "--threads takes an integer"),
    "threads not a number": (lambda t, p: ["--model", p, "--threads", "two"], 2, "--threads takes an integer"),
    "empty model path": (lambda t, p: ["--model", ""], 2, "empty value"),
    "inputs and a made shape": (lambda t, p: ["--model", p, *_three(t, t / "ok.npy"), "--seq-len", 8], 2, "not both"),
    "missing model": (lambda t, p: ["--model", t / "nope.pte"], 1, "not found"),
    "model is a folder": (lambda t, p: ["--model", t], 1, "is a directory"),
    "model is a FIFO": (lambda t, p: ["--model", _fifo(t / "fifo.pte")], 1, "not a regular file"),
    "text file": (lambda t, p: ["--model", _write(t / "x.pte", b"not a program\n")], 1,
                  "not a loadable ExecuTorch program"),
    "empty file": (lambda t, p: ["--model", _write(t / "x.pte", b"")], 1, "not a loadable ExecuTorch program"),
    "truncated program": (lambda t, p: ["--model", _write(t / "x.pte", p.read_bytes()[:3000])], 1,
                          "not a loadable ExecuTorch program"),
    "unknown method": (lambda t, p: ["--model", p, "--method", "backward"], 1, "no method 'backward'"),
    "too few inputs": (lambda t, p: ["--model", p, *_three(t, t / "ok.npy")[:2]], 1, "takes 3 inputs, 1 --input"),
    "too many inputs": (lambda t, p: ["--model", p, *_three(t, t / "ok.npy"), "--input", t / "ok.npy"], 1,
                        "takes 3 inputs, 4 --input"),
    "float32 input": (lambda t, p: ["--model", p, *_three(t, _npy(t, "f.npy", np.ones((1, 8), np.float32)))], 1,
                      "is float32; the program takes int64"),
    "int32 input": (lambda t, p: ["--model", p, *_three(t, _npy(t, "i.npy", np.ones((1, 8), np.int32)))], 1,
                    "is int32; the program takes int64"),
    "rank 3 input": (lambda t, p: ["--model", p, *_three(t, _npy(t, "r.npy", np.ones((1, 2, 8), np.int64)))], 1,
                     "has rank 3"),
    "sequence past the maximum": (lambda t, p: ["--model", p, *_three(t, _npy(t, "s.npy", np.ones((1, 65), np.int64)))],
                                  1, "takes at most [1, 64]"),
    "batch past the fixed one": (lambda t, p: ["--model", p, *_three(t, _npy(t, "b.npy", np.ones((2, 8), np.int64)))],
                                 1, "takes at most [1, 64]"),
    "empty sequence": (lambda t, p: ["--model", p, *_three(t, _npy(t, "z.npy", np.ones((1, 0), np.int64)))], 1,
                       "at least 1"),
    "made sequence past the maximum": (lambda t, p: ["--model", p, "--seq-len", 65], 1, "takes at most [1, 64]"),
    "made batch past the fixed one": (lambda t, p: ["--model", p, "--batch", 2], 1, "takes at most [1, 64]"),
    "Fortran-order npy": (lambda t, p: ["--model", p,
                                        *_three(t, _npy(t, "fo.npy", np.asfortranarray(np.ones((2, 8), np.int64))))],
                          1, "Fortran-order"),
    "not an npy": (lambda t, p: ["--model", p, *_three(t, _write(t / "n.npy", b"hello world"))], 1, "not a .npy file"),
    "truncated npy": (lambda t, p: ["--model", p, *_three(t, _cut_npy(t))], 1, "data bytes"),
    "missing npy": (lambda t, p: ["--model", p, *_three(t, t / "gone.npy")], 1, "not found"),
    "output dir is a file": (lambda t, p: ["--model", p, "--output-dir", _write(t / "file", b"x")], 1,
                             "not a directory"),
    "output dir without parent": (lambda t, p: ["--model", p, "--output-dir", t / "a" / "b"], 1,
                                  "cannot make --output-dir"),
    "output dir under a file": (lambda t, p: ["--model", p, "--output-dir", _write(t / "f", b"x") / "out"], 1,
                                "cannot make --output-dir"),
    # Caught by the kernel, inside the run: the runner cannot know the embedding table's size.
    "ids past the vocabulary": (lambda t, p: ["--model", p, "--vocab", 100000, "--seq-len", 8], 1, "weight.size(0) 99"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_a_nonzero_exit(host_runner, et_artifact, tmp_path, case):
    make_args, status, phrase = BAD_CASES[case]
    args = make_args(tmp_path, et_artifact("mnli") / "model.pte")
    before = sorted(tmp_path.rglob("*"))
    proc = host_runner.run(*args, "--output-dir", tmp_path / "out", timeout=30) if case == "ids past the vocabulary" \
        else host_runner.run(*args, timeout=30)
    lines = proc.stderr.splitlines()
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], proc.stderr
    assert proc.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before   # a failed run leaves nothing behind (no output folder)


def test_help_is_the_usage_and_exit_zero(host_runner):
    proc = host_runner.run("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: sbexport_runner --model PATH")
    for flag in ("--input", "--batch", "--seq-len", "--vocab", "--seed", "--warmup", "--runs", "--threads",
                 "--output-dir", "--method", "--kernel-stats", "--verbose"):
        assert f"  {flag} " in proc.stdout, flag


# --------------------------------------------------------------------------------------
# make toolchain: a no-op when everything is there, a clear refusal where it cannot install
# --------------------------------------------------------------------------------------

TOOLCHAIN_SCRIPT = ROOT / "android_demo" / "install_toolchain.sh"


def run_toolchain(packages: str, prefix: tuple[str, ...] = (), path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SBEXPORT_TOOLCHAIN_PACKAGES": packages}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([*prefix, "/bin/bash", str(TOOLCHAIN_SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_toolchain_does_nothing_when_installed():
    proc = run_toolchain("coreutils bash")   # always installed on Debian: no apt-get, no root needed
    assert proc.returncode == 0 and "already installed" in proc.stdout and proc.stderr == ""


def test_toolchain_refuses_without_root():
    proc = run_toolchain("sbexport-no-such-package",
                         prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: make toolchain must run as root to apt-get install "
                                        "sbexport-no-such-package (try: sudo make toolchain)"]


def test_toolchain_refuses_without_apt(tmp_path):
    proc = run_toolchain("sbexport-no-such-package", path=str(tmp_path))   # no dpkg-query, no apt-get
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1 and "needs apt-get" in proc.stderr
