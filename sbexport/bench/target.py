"""The runner interface: what the benchmark asks of the machine whose runtimes it times.

A Target is a place where models run: the host CPU (host.HostTarget, wrapping
sbexport.runtime's runners and the PyTorch reference) or a remote device (an Android phone
over adb). The pipeline (pipeline.py) exports, counts FLOPs and writes the report on the host
whatever the target; only what is listed here runs on the target. A target provides:

    name                                   a short name: "host", or e.g. "adb:<serial>"
    describe(threads) -> dict              the machine: the keys of the report's "machine" (see
                                           schema/bench-1.json: cpu, cpu_id, machine, platform,
                                           cores, cores_available, load_average, flags,
                                           virtualised, python, versions, threads); a device
                                           fills them from getprop, /proc/cpuinfo, nproc, ...
                                           (python: the driving host's)
    cores() -> int                         cores a run may use there: the thread count when
                                           the user gives none
    load_average() -> list | None          1/5/15-minute load, read again after the run
    unavailable(runtime) -> str | None     why `runtime` cannot run there (not installed, no
                                           runner binary), or None; such runtimes are skipped
    ceiling(threads, size, workdir) -> dict
                                           the fp32 matrix-multiply rate on `threads` (keys of
                                           the report's "ceiling": gflops, size, repeats,
                                           threads, best_ms, cpu_wait_pct, op; the host adds
                                           library and libraries); the models it runs are
                                           kept in `workdir`, the run's work folder
    notes(config) -> dict                  how it measures: "timing", "load", "threads",
                                           "memory", "ceiling", "cpu_wait_pct" (a sentence each)
    session(task, runtime, threads)        context manager -> Session: sets the runtime's
                                           thread count for the block and restores it; every
                                           model loaded in it is released when it ends
    peak_memory(task, runtime, model, artifact, seq_lens, batch, threads) -> Peak | None
                                           peak memory of that model loaded alone and run once
                                           at each length, in a fresh process (None: not known)
    close()                                clean up (files pushed to a device, its processes)

and a Session provides:

    load(model, artifact) -> Loaded        load `model` (a BenchModel; `artifact` is the
                                           exported folder, None for eager) ready to run, and
                                           say how long that took and what file it runs
    time(loaded, feeds, warmup, runs) -> {arch: Timing}
                                           run each loaded model on its fixed inputs `feeds`
                                           ({arch: {input name: int64 array [batch, seq]}}):
                                           the first call apart, `warmup` untimed calls, then
                                           `runs` timed calls of the model alone (nothing else
                                           inside the timed region), interleaved between the
                                           models where the target can; the times in seconds

Every model at one shape gets the same inputs on every target: feeds_for below.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class Loaded:
    """A model loaded on a target: `handle` is the target's own (a callable on the host, a
    path on a device); `file` and `file_bytes` name what it runs (eager: the weights in memory)."""

    arch: str
    file: str
    file_bytes: int
    load_s: float
    handle: object = None


@dataclass(frozen=True)
class Timing:
    """One model at one shape: the first call after loading, then each timed call, in seconds;
    cpu_wait_pct is the time its threads waited for a CPU during the timed calls (% of wall
    time, summed over threads), None where the target cannot tell."""

    first_s: float
    times_s: list[float]
    cpu_wait_pct: float | None = None


@dataclass(frozen=True)
class Peak:
    """Peak resident memory of one model alone: before loading (`baseline_mb`) and the
    high-water mark after a run at each length (`peak_mb`); `hwm_reset` says whether the mark
    could be reset after the imports (otherwise it includes them)."""

    baseline_mb: float
    peak_mb: dict[int, float] = field(default_factory=dict)
    hwm_reset: bool = False


class Session(Protocol):
    def load(self, model, artifact: Path | None) -> Loaded: ...

    def time(self, loaded: list[Loaded], feeds: dict[str, dict[str, np.ndarray]], warmup: int,
             runs: int) -> dict[str, Timing]: ...


class Target(Protocol):
    name: str

    def describe(self, threads: int) -> dict: ...

    def cores(self) -> int: ...

    def load_average(self) -> list[float] | None: ...

    def unavailable(self, runtime: str) -> str | None: ...

    def ceiling(self, threads: int, size: int, workdir: Path) -> dict: ...

    def notes(self, config) -> dict: ...

    def session(self, task, runtime: str, threads: int) -> contextlib.AbstractContextManager[Session]: ...

    def peak_memory(self, task, runtime: str, model, artifact: Path | None, seq_lens, batch: int,
                    threads: int) -> Peak | None: ...

    def close(self) -> None: ...


def feeds_for(task, model_cfg, batch: int, seq_len: int) -> dict[str, np.ndarray]:
    """The fixed inputs every runtime gets at one shape: export.example_inputs as int64 numpy
    ([batch, seq], or [batch, choices, seq] for multiple choice)."""
    from ..export import example_inputs
    return {k: v.numpy() for k, v in example_inputs(task, model_cfg, batch, seq_len).items()}
