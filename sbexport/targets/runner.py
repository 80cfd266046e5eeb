"""The native runner (android_demo/runner.cpp) seen from Python: build it, start it, run one
input case through it with .npy files.

The same runner binary serves the host (built against the x86_64 executorch wheel) and arm64
(the self-contained bundle android_demo/build.sh makes, whose `run` script starts it under
the qemu-aarch64 command named in SBEXPORT_QEMU). verify on arm64 and the tests run it here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SbexportError
from ..tasks import INPUT_NAMES

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "android_demo" / "build.sh"


def build_runner(kind: str, python: str = sys.executable, timeout: float = 1200) -> Path:
    """Build the runner with android_demo/build.sh (`kind` "host" or "arm64"; cached under
    build/, so a second call only rebuilds what changed). Returns the host binary or the arm64
    bundle's `run` script; raises SbexportError with the script's one-line reason (e.g. "run
    make toolchain")."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), kind], env={**os.environ, "PYTHON": python},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SbexportError(f"android_demo/build.sh {kind} failed: {proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class NativeRunner:
    """A built runner: the command that starts it, the environment it needs (added to this
    process's), and a name for messages."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    name: str = "host"

    def run(self, *args, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run it with `args` (str() of each); the finished process, output captured as text."""
        return subprocess.run([*self.argv, *map(str, args)], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def qemu_runner(bundle_run: Path, cpu: str) -> NativeRunner:
    """The arm64 bundle's `run` script under `qemu-aarch64 -cpu CPU`."""
    return NativeRunner([str(bundle_run)], {"SBEXPORT_QEMU": f"qemu-aarch64 -cpu {cpu}"}, name=f"qemu {cpu}")


@dataclass
class CaseResult:
    """One case through the runner: its JSON report, its outputs in the program's order, and
    what it wrote on stderr (nothing, on a clean run)."""

    report: dict
    outputs: list[np.ndarray]
    stderr: str


def run_case(runner: NativeRunner, pte: Path, feeds: dict[str, np.ndarray], folder: Path, threads: int = 1,
             timeout: float = 120) -> CaseResult:
    """Run one input case: `feeds` (int64 arrays keyed by input name) saved as .npy in `folder`
    (made here; must not exist), one run without warm-up on `threads` threads (0: the runner's
    choice), outputs read back from folder/out. Raises SbexportError with the runner's error line
    when it fails, or when it runs longer than `timeout` seconds."""
    folder.mkdir(parents=True)
    inputs: list = []
    for name in INPUT_NAMES:
        np.save(folder / f"{name}.npy", feeds[name])
        inputs += ["--input", folder / f"{name}.npy"]
    try:
        proc = runner.run("--model", pte, *inputs, "--warmup", 0, "--runs", 1, "--threads", threads,
                          "--output-dir", folder / "out", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SbexportError(f"{pte}: the runner ({runner.name}) took more than {timeout:g} s on one case") from None
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise SbexportError(f"{pte}: the runner ({runner.name}) failed: {reason[0].removeprefix('error: ')}")
    report = json.loads(proc.stdout)
    outputs = [np.load(folder / "out" / f"output_{i}.npy") for i in range(len(report["outputs"]))]
    return CaseResult(report, outputs, proc.stderr)
