"""Peak memory of one model on one runtime, measured in a fresh process.

A process's high-water mark (VmHWM, ru_maxrss) only rises, and the allocators keep freed memory
for reuse, so in the benchmarking process (which holds both models of a pair and has held
others before) no row could be told apart from the rest. Each (model, runtime) is therefore
loaded in its own subprocess: it imports the runtime, resets the high-water mark (Linux:
/proc/self/clear_refs; elsewhere the mark after imports stands), records its RSS, loads the
model, then runs once at each sequence length in increasing order and reads the high-water mark
after each. A row's figures are that peak (whole process: Python, the runtime's libraries and
the model) and its increase over the RSS before loading (the model's own cost: weights, the
runtime's copies and plans, and activations up to that length).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

from ..errors import SbexportError
from .inputs import fp32_runtime
from .target import Peak


def probe(spec: dict, timeout: float = 900) -> Peak:
    """Run the probe described by `spec` (see probe_spec) in a fresh Python process
    (`python -m sbexport.bench.memory_child`, the spec on its stdin).

    Raises SbexportError with the child's last stderr line when it fails."""
    done = subprocess.run([sys.executable, "-m", "sbexport.bench.memory_child"],
                          input=json.dumps(spec), capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise SbexportError(f"memory probe of {spec['arch']} on {spec['runtime']} failed: {tail[0][:300]}")
    result = json.loads(lines[-1])
    return Peak(result["baseline_mb"], {int(k): v for k, v in result["peak_mb"].items()}, result["hwm_reset"])


def probe_spec(task, runtime: str, model, artifact: Path | None, seq_lens, batch: int, threads: int) -> dict:
    """The JSON-able description of one probe; `model` is an inputs.BenchModel."""
    return {"runtime": runtime, "arch": model.arch, "task": task.name, "source": model.source.to_dict(),
            "build_config": model.build_config.to_dict() if model.build_config is not None else None,
            "artifact": str(artifact) if artifact is not None else None, "seq_lens": sorted(seq_lens),
            "batch": batch, "threads": threads}


def measure(spec: dict) -> dict:
    """The probe itself, run in the fresh process: load the model of `spec` alone, run it once
    at each length. Returns {"baseline_mb": float, "peak_mb": {seq_len: float}, "hwm_reset": bool}."""
    from ..config import CONFIG_CLASSES
    from ..source import ModelSource
    from ..tasks import get_task
    from ..threads import thread_settings
    from .inputs import bench_model_of
    from .models import open_model
    from .target import feeds_for

    task = get_task(spec["task"])
    built = spec["build_config"]
    model = bench_model_of(ModelSource.from_dict(spec["source"]),
                           CONFIG_CLASSES[spec["arch"]].from_dict(built) if built is not None else None)
    _import_runtime(spec["runtime"])
    # This process is its own entry point: it owns the pools until it exits.
    with thread_settings(spec["threads"], executorch=fp32_runtime(spec["runtime"]) == "executorch"):
        hwm_reset = _reset_high_water_mark()
        baseline = _rss_mb()
        loaded = open_model(task, spec["runtime"], model, spec["artifact"], spec["threads"])
        peaks = {}
        for seq_len in spec["seq_lens"]:
            loaded.run(feeds_for(task, model.config, spec["batch"], seq_len))
            peaks[seq_len] = _high_water_mark_mb()
        del loaded
    return {"baseline_mb": baseline, "peak_mb": peaks, "hwm_reset": hwm_reset}


def _import_runtime(runtime: str) -> None:
    # Imported before the baseline so that the libraries' own memory is not charged to the model.
    runtime = fp32_runtime(runtime)
    if runtime == "onnx":
        import onnxruntime  # noqa: F401
    elif runtime == "executorch":
        import executorch.runtime  # noqa: F401


def _reset_high_water_mark() -> bool:
    """Set VmHWM back to the current RSS (Linux 4.0+); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_mb() -> float:
    import psutil
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _high_water_mark_mb() -> float:
    """VmHWM where /proc has it. Not ru_maxrss on Linux: a child inherits its parent's maxrss
    across fork and exec, so every probe would report at least the benchmarking process's peak."""
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _read("/proc/self/status"), re.MULTILINE)
    if match:
        return int(match.group(1)) / 2**10
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10   # bytes on macOS, KiB on Linux


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""

