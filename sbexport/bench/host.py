"""The host CPU as a benchmark target (target.Target): PyTorch eager, ONNX Runtime and
ExecuTorch in this process, peak memory in a fresh one.

Loading is runners.open_model (the reference, or sbexport.runtime's runner of the exported
file); timing is timing.time_interleaved; a session owns torch's and ExecuTorch's thread pools
for its block (threads.thread_settings), so that no runner or timed call touches them.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path

from ..threads import thread_settings
from . import machine, memory, notes, sgemm
from .inputs import fp32_runtime
from .models import open_model
from .target import Loaded, Peak, Timing
from .timing import time_interleaved


class HostSession:
    """Models of one runtime loaded in this process (target.Session)."""

    def __init__(self, task, runtime: str, threads: int):
        self.task, self.runtime, self.threads = task, runtime, threads
        self.loaded: list[Loaded] = []

    def load(self, model, artifact: Path | None) -> Loaded:
        started = time.perf_counter()
        opened = open_model(self.task, self.runtime, model, artifact, self.threads)
        self.loaded.append(Loaded(model.arch, opened.file, opened.file_bytes, time.perf_counter() - started,
                                  opened.run))
        return self.loaded[-1]

    def release(self) -> None:
        """Drop every model loaded here (their handles become None)."""
        for m in self.loaded:
            m.handle = None
        gc.collect()

    def time(self, loaded: list[Loaded], feeds: dict, warmup: int, runs: int) -> dict[str, Timing]:
        return time_interleaved({m.arch: m.handle for m in loaded}, feeds, warmup, runs)


class HostTarget:
    """This machine (target.Target)."""

    name = "host"

    def describe(self, threads: int) -> dict:
        return machine.machine_info(threads)

    def cores(self) -> int:
        return machine.available_cores()

    def load_average(self) -> list[float] | None:
        return machine.load_average()

    def unavailable(self, runtime: str) -> str | None:
        return machine.runtime_unavailable(fp32_runtime(runtime))

    def ceiling(self, threads: int, size: int, workdir: Path) -> dict:
        """The fastest library's fp32 product (sgemm.sgemm_ceiling), its files kept in `workdir`."""
        return sgemm.sgemm_ceiling(threads, size, workdir)

    def notes(self, config) -> dict:
        return notes.host_notes(config)

    @contextlib.contextmanager
    def session(self, task, runtime: str, threads: int) -> Iterator[HostSession]:
        """Loaded models hold runtime state tied to ExecuTorch's pool: they are released before
        the pools are put back, also when the block fails."""
        with thread_settings(threads, executorch=fp32_runtime(runtime) == "executorch"):
            session = HostSession(task, runtime, threads)
            try:
                yield session
            finally:
                session.release()

    def peak_memory(self, task, runtime: str, model, artifact: Path | None, seq_lens, batch: int,
                    threads: int) -> Peak | None:
        return memory.probe(memory.probe_spec(task, runtime, model, artifact, seq_lens, batch, threads))

    def close(self) -> None:
        """Nothing to clean: the work folder is the pipeline's."""
