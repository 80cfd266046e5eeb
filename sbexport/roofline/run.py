"""Measure the roofline: the machine's ceilings, then every projection shape in every runtime.

    run_roofline(RooflineConfig(...), json_path=..., plot_path=...) -> result dict (report.SCHEMA)

Order of work: check every input (before any of it is spent); measure the ceilings (sgemm and
copy bandwidth) on one core, on the run's threads and on every core; then per projection
shape: random weights, each runtime prepares its model and has its output checked against a
float64 reference, then at each sequence length the runtimes are timed interleaved call by call
(the order reversed every other round) so that a drift of the machine hits them alike. On more
than one thread, torch's pool stays at one thread but inside torch's own calls, and torch is
timed in a block after the others (timing_blocks): its OpenMP workers spin after each call.

Timing of one call: wall time (perf_counter_ns) around run(x) on a fixed x [1, cin, seq]
float32, output returned as numpy; `warmup` untimed rounds, then `repeats` timed ones. A runtime
whose run also times its convolution operator alone (runtimes.OpTimed: ExecuTorch, from ETDump)
is then run again, `warmup` + `repeats` calls on the same x, for the op_* fields of its rows.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..bench import sgemm
from ..bench.inputs import refuse_duplicates
from ..bench.machine import available_cores, cpu_wait_pct, load_average, machine_info, scheduler_times
from ..bench.progress import BAR_FORMAT
from ..errors import SbexportError
from ..reportfile import check_report_paths, write_reports
from ..threads import thread_settings
from . import report
from .ceilings import better, ceilings
from .runtimes import DEFAULT_RUNTIMES, RUNTIMES, ConvWeights, ExecuTorchConv, Run
from .shapes import FORMULA, Projection, dense_reference, projections

# A runtime's output may differ from the float64 reference by this much relative to the
# reference's largest magnitude. Measured here (Intel kind, ConvWeights.random, unit-normal
# inputs, seq 8 and 512): worst 1.5e-6 (ExecuTorch XNNPACK, 768x768/g1 and 3072x768/g4);
# torch at most 6.5e-7, ONNX Runtime 7.0e-7. Rounding grows with the sum length and differs
# on AVX2 machines, hence a 13x margin. A wrong kernel (groups mixed up, bias dropped) is off
# by O(1).
RELATIVE_TOLERANCE = 2e-5


@dataclass(frozen=True)
class RooflineConfig:
    """What to measure. threads None: every core this process may use."""

    seq_lens: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    threads: int | None = None
    repeats: int = 20
    warmup: int = 3
    sgemm_size: int = 2048
    bandwidth_mb: int = 256
    seed: int = 0


def quick_config(**changes) -> RooflineConfig:
    """A tiny sweep for tests and a first look: two lengths, 3 timed rounds, small ceilings;
    every projection shape and runtime still runs. `changes` override any field."""
    return replace(RooflineConfig(seq_lens=(8, 32), repeats=3, warmup=1, sgemm_size=256, bandwidth_mb=16), **changes)


def run_roofline(config: RooflineConfig, *, runtimes: dict | None = None, json_path: str | None = None,
                 plot_path: str | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> dict:
    """Measure, write the JSON and PNG when asked, return the result (report.SCHEMA).

    `runtimes`: the table of runtimes the names in config.runtimes are looked up in (default
    runtimes.RUNTIMES; a kernel under test is passed here). Raises SbexportError before any work
    for bad input (an unknown or repeated runtime, no, repeated or non-positive sequence length,
    repeats < 1, an unwritable output path, --json and --plot naming one file, no requested
    runtime able to run here), and when a runtime computes a projection wrongly. A runtime
    whose packages do not import (or, kernels, whose library is not built) is skipped with its
    reason, said to `log` before the work. Raises ReportsNotWritten (carrying the result) when
    the JSON or the plot could not be written (the other is written all the same).
    """
    table = RUNTIMES if runtimes is None else runtimes
    threads = check_config(config, table)
    check_report_paths({"--json": json_path, "--plot": plot_path})
    skipped, chosen = available_runtimes(config, table)
    for s in skipped:
        if log is not None:
            log(f"skipping {s['runtime']}: {s['reason']}")
    shapes, machine = projections(), machine_info(threads)
    roof_threads = sorted({1, threads, available_cores()})
    with _progress(config, len(roof_threads), len(shapes), len(chosen), progress) as bar, \
            tempfile.TemporaryDirectory(prefix="sbexport-roofline-") as tmp:
        folder = Path(tmp)
        first = measure_roofs(roof_threads, config, folder, bar)
        uses_executorch = any(isinstance(rt, ExecuTorchConv) for rt in chosen)
        # torch's pool at 1 outside torch's own calls (TorchConv sets it to `threads` for its
        # call): its idle OpenMP workers would spin beside the other runtimes' pools.
        with thread_settings(threads, executorch=uses_executorch), thread_settings(1):
            measured = {s.key: measure_shape(s, chosen, config, threads, folder, bar) for s in shapes}
        roofs = [better(a, b) for a, b in zip(first, measure_roofs(roof_threads, config, folder, bar))]
    result = {
        "schema": report.SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sbexport_version": __version__,
        "machine": {**machine, "load_average_end": load_average()},
        "config": {**asdict(config), "seq_lens": list(config.seq_lens), "runtimes": list(config.runtimes),
                   "threads": threads, "batch": 1},
        "method": method_notes(config),
        "ceilings": roofs,
        "shapes": [{"shape": s.key, "cin": s.cin, "cout": s.cout, "groups": s.groups, "projections": list(s.names)}
                   for s in shapes],
        "runtimes": {rt.name: rt.label for rt in chosen},
        "rows": build_rows(shapes, chosen, config, threads, measured, roofs),
        "skipped": skipped,
    }
    write_reports(result, [(json_path, report.write_json), (plot_path, report.plot)])
    return result


def available_runtimes(config: RooflineConfig, table: dict) -> tuple[list[dict], list]:
    """(skipped: {"runtime", "reason"} of each asked-for runtime that cannot run here, the
    runtimes that can). Raises SbexportError when none can: minutes of ceilings would
    otherwise end in a report without a row."""
    skipped = [{"runtime": name, "reason": why} for name in config.runtimes if (why := table[name].unavailable())]
    chosen = [table[n] for n in config.runtimes if not any(s["runtime"] == n for s in skipped)]
    if not chosen:
        reasons = "; ".join(f"{s['runtime']}: {s['reason']}" for s in skipped)
        raise SbexportError(f"none of the runtimes asked for can run here ({reasons})")
    return skipped, chosen


def check_config(config: RooflineConfig, table: dict) -> int:
    """Raise SbexportError for anything the run cannot do; return the thread count."""
    if not config.runtimes:
        raise SbexportError(f"no runtime given; choose from {', '.join(table)}")
    for name in config.runtimes:
        if name not in table:
            raise SbexportError(f"unknown runtime {name!r}; expected one of {', '.join(table)}")
    refuse_duplicates(config.runtimes, "--runtimes")
    if not config.seq_lens or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in config.seq_lens):
        raise SbexportError(f"--seq-lens must be positive integers (got {list(config.seq_lens)})")
    refuse_duplicates(config.seq_lens, "--seq-lens")
    if config.repeats < 1:
        raise SbexportError(f"--repeats must be at least 1 (got {config.repeats}): no timed call, no figure")
    if config.warmup < 0:
        raise SbexportError(f"warmup must be 0 or more (got {config.warmup})")
    threads = config.threads if config.threads is not None else available_cores()
    if threads < 1:
        raise SbexportError(f"--threads must be at least 1 (got {threads})")
    return threads


def measure_roofs(roof_threads: list[int], config: RooflineConfig, folder: Path, bar) -> list[dict]:
    """ceilings() on each of `roof_threads`, torch's pool set to it for the measurement; the
    sgemm's models kept in `folder` (lowered once, timed on every thread count)."""
    roofs = []
    for t in roof_threads:
        bar.set_description(f"ceilings on {t} thread{'s' if t > 1 else ''}")
        with thread_settings(t):
            roofs.append(ceilings(t, config.sgemm_size, config.bandwidth_mb, folder))
        bar.update(1)
    return roofs


def measure_shape(shape: Projection, chosen: list, config: RooflineConfig, threads: int, folder: Path,
                  bar) -> dict:
    """Prepare and check every runtime for `shape`, then time them interleaved at each length.
    Returns {runtime: {"max_abs_error": float, seq: {"times_s": [...], "cpu_wait_pct": float | None}}},
    with "op_times_s" and "op_call_times_s" beside "times_s" for a runtime that times its operator."""
    conv = ConvWeights.random(shape, config.seed)
    rng = np.random.default_rng(config.seed + 1)
    runs, out = {}, {}
    for rt in chosen:
        bar.set_description(f"prepare {shape.key} on {rt.name}")
        runs[rt.name] = rt.prepare(conv, max(config.seq_lens), folder, threads)
        out[rt.name] = {"max_abs_error": check_output(rt.label, conv, runs[rt.name], config.seq_lens, rng)}
        bar.update(1)
    blocks = timing_blocks(list(runs), threads)
    for seq in config.seq_lens:
        bar.set_description(f"{shape.key} seq {seq}")
        x = rng.standard_normal((1, shape.cin, seq), dtype=np.float32)
        times = {name: [] for name in runs}
        sched_before, wall_before = scheduler_times(), time.perf_counter_ns()
        for block in blocks:
            time_interleaved(block, runs, x, config, times, bar)
        wait = cpu_wait_pct(sched_before, wall_before)
        for name in runs:
            out[name][seq] = {"times_s": times[name], "cpu_wait_pct": wait}
            if hasattr(runs[name], "op_times"):     # after the wall-time calls: the profiler costs them nothing
                bar.set_description(f"{shape.key} seq {seq}: {name}'s operator alone")
                op, call = runs[name].op_times(x, config.warmup, config.repeats)
                out[name][seq].update(op_times_s=op, op_call_times_s=call)
    return out


def check_output(label: str, conv: ConvWeights, run: Run, seq_lens, rng) -> float:
    """Run at the shortest and longest length and compare with conv.reference; return the
    largest absolute error. Raises SbexportError when a shape or value is off (a fast wrong
    kernel is not worth timing)."""
    worst = 0.0
    for seq in sorted({min(seq_lens), max(seq_lens)}):
        x = rng.standard_normal((1, conv.shape.cin, seq), dtype=np.float32)
        expected, got = conv.reference(x), np.asarray(run(x))
        if got.shape != expected.shape:
            raise SbexportError(f"{label} returned shape {list(got.shape)} for the {conv.shape.key} convolution "
                                f"at seq {seq}; expected {list(expected.shape)}")
        error = float(np.max(np.abs(got - expected)))
        bound = RELATIVE_TOLERANCE * float(np.max(np.abs(expected)))
        if not error <= bound:      # NaN fails too
            raise SbexportError(f"{label} computes the {conv.shape.key} convolution wrongly at seq {seq}: "
                                f"max error {error:.3g} > bound {bound:.3g}")
        worst = max(worst, error)
    return worst


def timing_blocks(names: list[str], threads: int) -> list[list[str]]:
    """The runtimes timed call by call together, block after block. On one thread, all in one
    block. On more, torch's in a block of its own after the others: torch's OpenMP workers spin
    for milliseconds after each parallel call, taking a core from whichever call comes next
    (measured on 2 cores, 4 runtimes interleaved: 69-82% of the wall time waiting for a core,
    0-2% without torch among them; benchmarks/NOTES.md)."""
    if threads == 1 or "torch" not in names or len(names) == 1:
        return [names]
    return [[n for n in names if n != "torch"], ["torch"]]


def time_interleaved(names: list[str], runs: dict, x: np.ndarray, config: RooflineConfig, times: dict, bar) -> None:
    """config.warmup untimed then config.repeats timed calls of each of `names`, one call each
    in turn, the order reversed every other round (a drift of the machine hits them alike);
    appends the timed seconds to times[name]."""
    for i in range(config.warmup + config.repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            elapsed = _timed(runs[name], x)
            if i >= config.warmup:
                times[name].append(elapsed)
            bar.update(1)


def _timed(run: Run, x: np.ndarray) -> float:
    started = time.perf_counter_ns()
    run(x)
    return (time.perf_counter_ns() - started) / 1e9


def build_rows(shapes: list[Projection], chosen: list, config: RooflineConfig, threads: int, measured: dict,
               roofs: list[dict]) -> list[dict]:
    """One row per shape x runtime x sequence length, in that order. GFLOP/s at the median
    call; pct_of_dense compares with the dense shape's row of the same runtime and length."""
    roof = next(r for r in roofs if r["threads"] == threads)
    rows = [_row(s, rt, seq, threads, measured[s.key][rt.name], roof) for s in shapes for rt in chosen
            for seq in config.seq_lens]
    by_key = {(r["shape"], r["runtime"], r["seq_len"]): r for r in rows}
    by_shape = {s.key: s for s in shapes}
    for r in rows:
        dense = dense_reference(by_shape[r["shape"]], shapes)
        peer = by_key.get((dense.key, r["runtime"], r["seq_len"])) if dense else None
        r["dense_shape"] = dense.key if dense else None
        r["pct_of_dense"] = _r(100 * r["gflops"] / peer["gflops"]) if peer else None
        if "op_gflops" in r:
            r["pct_of_dense_op"] = _r(100 * r["op_gflops"] / peer["op_gflops"]) if peer else None
    return rows


def _row(shape: Projection, rt, seq: int, threads: int, measured: dict, roof: dict) -> dict:
    times = np.asarray(measured[seq]["times_s"])
    median, best = float(np.median(times)), float(times.min())
    flops, moved = shape.flops(seq), shape.bytes_moved(seq)
    gflops = flops / median / 1e9
    sgemm, bandwidth = roof["sgemm"]["gflops"], roof["bandwidth"]["gbytes_per_s"]
    attainable = min(sgemm, bandwidth * shape.intensity(seq))    # the roofline at this intensity
    row = {
        "shape": shape.key, "cin": shape.cin, "cout": shape.cout, "groups": shape.groups, "runtime": rt.name,
        "seq_len": seq, "batch": 1, "threads": threads, "flops": flops, "bytes": moved,
        "intensity": _r(shape.intensity(seq)), "repeats": len(times),
        "median_ms": _r(median * 1e3), "min_ms": _r(best * 1e3), "p90_ms": _r(np.percentile(times, 90) * 1e3),
        "gflops": _r(gflops), "gflops_best": _r(flops / best / 1e9),
        "pct_of_sgemm": _r(100 * gflops / sgemm), "attainable_gflops": _r(attainable),
        "pct_of_attainable": _r(100 * gflops / attainable),
        "max_abs_error": measured["max_abs_error"], "cpu_wait_pct": measured[seq]["cpu_wait_pct"],
    }
    if "op_times_s" in measured[seq]:
        op = float(np.median(measured[seq]["op_times_s"]))
        row.update(op_median_ms=_r(op * 1e3), op_call_median_ms=_r(np.median(measured[seq]["op_call_times_s"]) * 1e3),
                   op_gflops=_r(flops / op / 1e9))
    return row


def method_notes(config: RooflineConfig) -> dict:
    """How each figure was measured, stored beside the figures."""
    return {
        "flops": FORMULA,
        "bytes": "least traffic of one call: input, weight, bias read once and output written once, fp32",
        "timing": f"wall time (perf_counter_ns) of one call on a fixed [1, cin, seq] float32 input, output as "
                  f"numpy; {config.warmup} untimed then {config.repeats} timed rounds, the runtimes interleaved "
                  f"call by call, order reversed every other round (on more than one thread torch in a block "
                  f"of its own after the others, torch's pool at one thread outside its calls: its OpenMP "
                  f"workers spin after each call); gflops at the median call, gflops_best at "
                  f"the fastest",
        "op_time": f"ExecuTorch only (op_* fields): the program run again with ETDump on, {config.warmup} untimed "
                   f"then {config.repeats} calls on the same input after the wall-time ones; op_median_ms is the "
                   f"median of XNNPACK's convolution event (\"Convolution ...\", or \"Fully Connected ...\" for "
                   f"the dense shape, 1 us resolution), excluding the transposes and static reshapes the delegate "
                   f"puts around a lone convolution fed [1, cin, seq], which the model's [B, C, 1, S] layout "
                   f"(export/layout.py) does not pay per convolution; op_call_median_ms the median of "
                   f"Method::execute in the same calls; pct_of_dense_op compares op_gflops; executorch-per-group: "
                   f"the sum of its groups' events (one dense convolution per group) per call",
        "ceilings": f"compute: {sgemm.method(config.sgemm_size)}; memory: torch copy_ of {config.bandwidth_mb} MB "
                    f"fp32, read + write counted, best of 5; each on one thread, on the run's threads and on every "
                    f"core, before and after the sweep, the better kept; attainable = min(sgemm, bandwidth x "
                    f"intensity) on the run's threads",
        "threads": "torch's intra-op pool and ExecuTorch's pool set by the entry point; ONNX Runtime "
                   "intra_op_num_threads per session with spinning off (runtime.OnnxRunner)",
        "check": f"each runtime's output compared with a float64 numpy reference at the shortest and longest "
                 f"length before timing: max abs error <= {RELATIVE_TOLERANCE} x the reference's largest magnitude",
        "cpu_wait_pct": "time this process's threads were ready but waiting for a CPU during the rounds "
                        "(Linux schedstat), % of wall time summed over threads: above a few %, other work took "
                        "the cores and the figures are low",
    }


@contextlib.contextmanager
def _progress(config: RooflineConfig, n_roofs: int, n_shapes: int, n_runtimes: int, enabled: bool):
    """A tqdm bar on stderr (as bench's) counting ceilings, preparations and every call."""
    from tqdm import tqdm

    calls = n_shapes * n_runtimes * len(config.seq_lens) * (config.warmup + config.repeats)
    with tqdm(total=2 * n_roofs + n_shapes * n_runtimes + calls, file=sys.stderr, disable=not enabled,
              bar_format=BAR_FORMAT, dynamic_ncols=True) as bar:
        yield bar


def _r(x, digits: int = 5) -> float:
    """`x` to `digits` significant digits."""
    return float(f"{float(x):.{digits}g}")
