"""The machine under the benchmark: its CPU, the clocks a measurement reads (scheduler wait,
load average) and which runtimes import. Its fp32 matrix-multiply ceiling is sgemm.py's;
thread counts are set by the entry point (sbexport/threads.py)."""

from __future__ import annotations

import glob
import os
import platform
import re
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..errors import first_line

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni",
                     "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "asimddp", "i8mm",
                     "sve", "sve2", "bf16")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def best_seconds(call: Callable[[], object], repeats: int) -> tuple[float, float | None]:
    """(fastest of `repeats` timed calls in s, cpu_wait_pct over them) after one untimed call
    (it packs buffers, faults pages in and wakes the pool): the ceilings' timing."""
    call()
    best = float("inf")
    sched_before, wall_before = scheduler_times(), time.perf_counter_ns()
    for _ in range(repeats):
        started = time.perf_counter_ns()
        call()
        best = min(best, (time.perf_counter_ns() - started) / 1e9)
    return best, cpu_wait_pct(sched_before, wall_before)


def cpu_wait_pct(sched_before: tuple[int, int] | None, wall_before_ns: int) -> float | None:
    """Time this process's threads waited for a CPU since `sched_before`, as % of the wall time
    since `wall_before_ns` (summed over threads, so 2 starved threads give 200)."""
    sched_after, wall = scheduler_times(), time.perf_counter_ns() - wall_before_ns
    if sched_before is None or sched_after is None or wall <= 0:
        return None
    return round(100 * (sched_after[1] - sched_before[1]) / wall, 1)


def scheduler_times() -> tuple[int, int] | None:
    """(ns on a CPU, ns ready but waiting for one), summed over this process's live threads
    (Linux /proc/self/task/*/schedstat), or None where the kernel does not provide it.

    The waiting time is the direct measure of other work taking the cores: near zero on a
    quiet machine, whatever the load of this process."""
    on_cpu = waiting = 0
    found = False
    for path in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(path) as f:
                fields = f.read().split()
        except OSError:          # the thread ended between listing and reading
            continue
        on_cpu, waiting, found = on_cpu + int(fields[0]), waiting + int(fields[1]), True
    return (on_cpu, waiting) if found else None


def runtime_unavailable(runtime: str) -> str | None:
    """Why `runtime` cannot be benchmarked here (its packages do not import), or None."""
    needs = {"eager": (), "onnx": ("onnx", "onnxscript", "onnxruntime"),
             "executorch": ("executorch.exir", "executorch.runtime",
                            "executorch.backends.xnnpack.partition.xnnpack_partitioner")}[runtime]
    import importlib
    for name in needs:
        try:
            importlib.import_module(name)
        except Exception as e:  # ImportError, or OSError from a shared library that does not load
            return f"{name} does not import ({type(e).__name__}: {first_line(e, 200)})"
    return None


def machine_info(threads: int) -> dict:
    """CPU model, cores, SIMD flags, load average and library versions, for the report."""
    cpuinfo = _read("/proc/cpuinfo")
    model = _cpuinfo_field(cpuinfo, "model name") or _cpuinfo_field(cpuinfo, "Hardware") or platform.processor() \
        or platform.machine()
    flags = set((_cpuinfo_field(cpuinfo, "flags") or _cpuinfo_field(cpuinfo, "Features") or "").split())
    versions = {}
    for package in ("torch", "onnxruntime", "onnx", "executorch", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    cpu_id = {k: _cpuinfo_field(cpuinfo, k) for k in ("vendor_id", "cpu family", "model", "stepping", "CPU part")}
    return {"cpu": model, "cpu_id": {k: v for k, v in cpu_id.items() if v}, "machine": platform.machine(),
            "platform": platform.platform(),
            "cores": os.cpu_count(), "cores_available": available_cores(), "load_average": load_average(),
            "flags": [f for f in INTERESTING_FLAGS if f in flags], "virtualised": "hypervisor" in flags,
            "python": platform.python_version(), "versions": versions, "threads": threads}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpuinfo_field(text: str, name: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: above the core count, other work shared the CPU."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
