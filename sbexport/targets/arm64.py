"""Run exported files on an emulated arm64 CPU: the arm64-qemu target of `sbexport verify`.

The arm64 kernels of XNNPACK and ONNX Runtime are different code from their x86 kernels, so
parity on the host says nothing about a phone. Here each case runs in qemu-aarch64 on a chosen
CPU model (`-cpu`), the outputs coming back as .npy files:

  .pte   the native runner's arm64 bundle (android_demo/), one process per case
  .onnx  ONNX Runtime's aarch64 wheel in Debian's arm64 Python, one process for the whole sweep
         (arm64_ort.py, started once: its import takes seconds under emulation)

What runs is made by `make arm64` in a setup folder, build/arm64/ (the environment variable
SBEXPORT_ARM64_DIR names another): runner/run (the bundle) and python/ (usr/bin/python3.11 with
its glibc, and site/ with the wheels). Nothing needs root or binfmt_misc: qemu-aarch64 is called
by name, and its -L prefix gives ONNX Runtime the ARM /proc/cpuinfo its CPU detection reads
(given the host's, the import segfaults): qemu opens PREFIX/proc/cpuinfo in place of
/proc/cpuinfo when that file exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SbexportError
from .runner import ROOT, NativeRunner, qemu_runner, run_case

SETUP_ENV = "SBEXPORT_ARM64_DIR"
MAKE_TARGET = "make arm64"
DEFAULT_CPU = "cortex-a53"   # ARMv8.0: no dot product, no fp16 arithmetic; "max" has all qemu emulates
ORT_SCRIPT = Path(__file__).with_name("arm64_ort.py")

# The reduced sweep: sequences up to 32 tokens (verify's sweep otherwise goes to the file's
# maximum). Every kind of case still runs (lengths 1, 7 and 32, padded masks, batch 3 where the
# file takes it, real sentences); a full-size SqueezeBERT forward at sequence 128 takes about
# 90 s under qemu, at 32 about a quarter of that.
MAX_SEQ = 32
CASE_TIMEOUT = 600.0   # seconds for one case of a full-size model on the slowest CPU model

# MIDR fields (implementer, part) of qemu 7.2's aarch64 CPU models, written into the ARM
# /proc/cpuinfo ONNX Runtime's cpuinfo parses (it picks micro-architecture tuned kernels by
# part; features it reads from the auxiliary vector, which qemu sets per model). "max" is
# qemu's own MIDR (implementer 0, part 0x051: 'Q'). A model missing here gets Arm's generic.
MIDR = {"a64fx": (0x46, 0x001), "cortex-a35": (0x41, 0xd04), "cortex-a53": (0x41, 0xd03),
        "cortex-a57": (0x41, 0xd07), "cortex-a72": (0x41, 0xd08), "cortex-a76": (0x41, 0xd0b),
        "neoverse-n1": (0x41, 0xd0c), "max": (0x00, 0x051)}


@dataclass(frozen=True)
class Arm64Setup:
    """The folder `make arm64` fills: runner/run and python/ (see the module docstring)."""

    root: Path

    @property
    def runner(self) -> Path:
        return self.root / "runner" / "run"

    @property
    def prefix(self) -> Path:
        return self.root / "python"

    @classmethod
    def find(cls) -> Arm64Setup:
        """The setup named by SBEXPORT_ARM64_DIR, else build/arm64 of this source tree; raises
        SbexportError naming the make target when qemu-aarch64 or a part of the setup is missing."""
        root = Path(os.environ.get(SETUP_ENV) or ROOT / "build" / "arm64")
        if shutil.which("qemu-aarch64") is None:
            raise SbexportError(f"--target arm64-qemu needs qemu-aarch64, which is not installed: run `{MAKE_TARGET}`")
        setup = cls(root)
        for part, what in ((setup.runner, "the arm64 runner"), (setup.prefix / ".complete", "the arm64 Python")):
            if not part.is_file():
                raise SbexportError(f"the arm64 setup in {root} is missing {what} ({part.relative_to(root)}): "
                                    f"run `{MAKE_TARGET}`")
        return setup


def qemu_cpu_models() -> list[str]:
    """The aarch64 CPU models the installed qemu-aarch64 emulates (`-cpu help`)."""
    proc = subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()]


@dataclass(frozen=True)
class QemuArm64Target:
    """verify's arm64-qemu target: where and how a file's cases run (see the module docstring)."""

    setup: Arm64Setup
    cpu: str = DEFAULT_CPU
    name = "arm64-qemu"
    max_seq = MAX_SEQ
    records_in_manifest = False   # the manifest keeps the host's figures of the export

    @classmethod
    def open(cls, cpu: str | None = None) -> QemuArm64Target:
        """The target on CPU model `cpu` (default cortex-a53); raises SbexportError when the
        setup is missing or qemu does not know the model."""
        setup = Arm64Setup.find()
        cpu = cpu or DEFAULT_CPU
        models = qemu_cpu_models()
        if cpu not in models:
            raise SbexportError(f"qemu-aarch64 has no CPU model {cpu!r}; it has {', '.join(models)}")
        return cls(setup, cpu)

    @contextlib.contextmanager
    def open_runner(self, path: Path, input_names: tuple[str, ...], threads: int = 0) -> Iterator:
        """A runner of the file at `path` (chosen by its suffix) with a scratch folder for its
        cases, removed when the block ends. `threads` 0 leaves the count to the runtime."""
        with tempfile.TemporaryDirectory(prefix="sbexport-arm64-") as scratch:
            if path.suffix == ".pte":
                yield PteRunner(qemu_runner(self.setup.runner, self.cpu), path, threads, Path(scratch))
            elif path.suffix == ".onnx":
                with OnnxServer(self.setup, self.cpu, path, threads, Path(scratch)) as runner:
                    yield runner
            else:
                raise SbexportError(f"{path}: unknown model file type (expected .onnx or .pte)")

    def describe(self, runner) -> dict:
        """What ran where, for the report: this target, the CPU model, the runtime and the
        architecture the arm64 side reported (after at least one case)."""
        return {"name": self.name, "cpu": self.cpu, "emulated": True, **runner.ran_on}


class PteRunner:
    """A .pte through the arm64 runner bundle, one process per case."""

    def __init__(self, runner: NativeRunner, path: Path, threads: int, scratch: Path):
        self.runner, self.path, self.threads, self.scratch = runner, path, threads, scratch
        self.ran_on: dict = {}
        self.cases = 0

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for `feeds`; raises SbexportError with the runner's own error line."""
        self.cases += 1
        result = run_case(self.runner, self.path, feeds, self.scratch / f"case{self.cases}", self.threads,
                          timeout=CASE_TIMEOUT)
        self.ran_on = {"arch": result.report["arch"],
                       "runtime": f"executorch {result.report['executorch_version']} (sbexport_runner)"}
        return result.outputs


class OnnxServer:
    """An .onnx in arm64 ONNX Runtime: arm64_ort.py in the setup's Python under qemu, started
    once, fed case folders on stdin. A context manager: the process ends with the block."""

    def __init__(self, setup: Arm64Setup, cpu: str, path: Path, threads: int, scratch: Path):
        self.path, self.scratch, self.cases = path, scratch, 0
        root = _cpu_prefix(setup.prefix, cpu, scratch / "prefix")
        argv = ["qemu-aarch64", "-cpu", cpu, "-L", str(root), str(root / "usr" / "bin" / "python3.11"), "-I",
                str(ORT_SCRIPT), str(setup.prefix / "site"), str(path.resolve()), str(threads)]
        self.stderr = (scratch / "stderr.txt").open("w+")
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True, env={k: v for k, v in os.environ.items() if k != "QEMU_LD_PREFIX"})
        ready = self._answer()
        if "error" in ready:
            self.close()
            raise SbexportError(f"{path}: {ready['error']} (arm64 ONNX Runtime on qemu {cpu})")
        self.ran_on = {"arch": ready["arch"], "runtime": f"onnxruntime {ready['onnxruntime']}"}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for `feeds`; raises SbexportError with ONNX Runtime's error line."""
        self.cases += 1
        folder = self.scratch / f"case{self.cases}"
        folder.mkdir()
        for name, value in feeds.items():
            np.save(folder / f"{name}.npy", value)
        self.process.stdin.write(f"{folder}\n")
        self.process.stdin.flush()
        reply = self._answer()
        if "error" in reply:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise SbexportError(f"{self.path}: arm64 ONNX Runtime refused inputs {shapes} ({reply['error']})")
        return [np.load(folder / "out" / f"output_{i}.npy") for i in range(reply["outputs"])]

    def _answer(self) -> dict:
        """The next JSON line from the process; raises SbexportError with its stderr's last line
        when it ended instead (a crash under qemu, a missing library), or when none came within
        CASE_TIMEOUT (the process is then killed). It writes one line per request, so nothing
        waits in the pipe's buffer unseen by select."""
        if not select.select([self.process.stdout], [], [], CASE_TIMEOUT)[0]:
            self.process.kill()
            raise SbexportError(f"{self.path}: arm64 ONNX Runtime gave no answer within {CASE_TIMEOUT:g} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=CASE_TIMEOUT)
            self.stderr.seek(0)
            last = (self.stderr.read().strip().splitlines() or [f"exit status {self.process.returncode}"])[-1]
            raise SbexportError(f"{self.path}: arm64 ONNX Runtime stopped: {last[:300]}")
        return json.loads(line)

    def close(self) -> None:
        """End the process (an empty line asks it to stop) and close its files."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.write("\n")
                self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self.stderr.close()

    def __enter__(self) -> OnnxServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cpu_prefix(prefix: Path, cpu: str, root: Path) -> Path:
    """A folder for qemu's -L: links to the setup's usr/, lib/ and etc/, and a proc/cpuinfo
    describing `cpu`, one processor per processor of the machine (cpuinfo matches them against
    /sys/devices/system/cpu, which qemu passes through). Returns `root`."""
    root.mkdir()
    for name in ("usr", "lib", "etc"):
        (root / name).symlink_to(prefix / name)
    implementer, part = MIDR.get(cpu, (0x41, 0x000))
    block = (f"processor\t: {{}}\nBogoMIPS\t: 50.00\nCPU implementer\t: {implementer:#04x}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part:#05x}\nCPU revision\t: 0\n\n")
    cores = os.cpu_count() or 1
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text("".join(block.format(i) for i in range(cores)))
    return root
