"""Where verify runs an exported file: the host (this machine, runtime.py's runners) or an
emulated arm64 CPU (arm64.py). A target opens a runner for a model file, says how far the
parity sweep goes there, and describes itself for the report."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from pathlib import Path

from ..errors import SbexportError
from ..runtime import open_runner

TARGET_NAMES = ("host", "arm64-qemu")


class HostTarget:
    """This machine, through ONNX Runtime and executorch's Python runtime: the full sweep, whose
    figures the manifest records."""

    name = "host"
    max_seq = None
    records_in_manifest = True

    @contextlib.contextmanager
    def open_runner(self, path: Path, input_names: tuple[str, ...], threads: int = 0) -> Iterator:
        """runtime.open_runner's runner for `path` (nothing to close)."""
        yield open_runner(path, input_names, threads)

    def describe(self, runner) -> dict:
        return {"name": self.name, "arch": platform.machine(), "emulated": False}


HOST = HostTarget()


def open_target(name: str, cpu: str | None = None):
    """The target called `name` (one of TARGET_NAMES); `cpu` is the emulated CPU model of
    arm64-qemu. Raises SbexportError when the target's setup is missing or `cpu` does not apply."""
    if name == "host":
        if cpu is not None:
            raise SbexportError("--cpu chooses an emulated CPU model: it applies to --target arm64-qemu only")
        return HOST
    if name == "arm64-qemu":
        from .arm64 import QemuArm64Target
        return QemuArm64Target.open(cpu)
    raise SbexportError(f"unknown target {name!r}; choose one of {', '.join(TARGET_NAMES)}")
