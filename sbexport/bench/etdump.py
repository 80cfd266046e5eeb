"""ExecuTorch's ETDump: run a program's `forward` with it on, read the time of each event back.

    run_with_etdump(pte, inputs, runs, dump) -> wait %     the dump holds 1 untimed + `runs` calls
    per_op(dump, skip) -> (Method::execute ms, {name: [count, ms]})   medians, summed per event name
    convolution_times(dump, skip) -> (conv ms, execute ms)      per call, of a one-convolution program

XNNPACK's delegate reports each of its operators as an event named by kind and position inside
the delegate: "Convolution (NHWC, F32) IGEMM #1" (a grouped 1x1 convolution), "Fully Connected
(NC, F32) GEMM #1" (XNNPACK makes a dense 1x1 convolution a fully-connected GEMM), "Transpose
(ND, X32) #1" and "Static Reshape (NC) #1" (the layout changes around a convolution fed [N, C, S]).
The Inspector gives each event's times in ms, one per call in call order, at 1 us resolution for
the delegate's events. Used by benchmarks/et_profile.py (a whole model) and the roofline's
ExecuTorch runtime (one convolution).
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import SbexportError
from .machine import cpu_wait_pct, scheduler_times

# Names XNNPACK gives the operator of a 1x1 convolution: grouped, or dense turned into a GEMM.
CONVOLUTION_EVENTS = ("Convolution ", "Fully Connected ")


def run_with_etdump(pte: Path, inputs: list, runs: int, dump: Path) -> float | None:
    """Run `forward` once untimed, then `runs` times, with ETDump on; write the dump (all 1 + runs
    calls) to `dump`. Returns this process's CPU wait % over the `runs` calls (machine.cpu_wait_pct)."""
    from executorch.extension.pybindings import portable_lib

    module = portable_lib._load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
    module.run_method("forward", inputs)
    sched, wall = scheduler_times(), time.perf_counter_ns()
    for _ in range(runs):
        module.run_method("forward", inputs)
    wait = cpu_wait_pct(sched, wall)
    module.write_etdump_result_to_file(str(dump))
    return wait


def _execute_events(dump: Path):
    """The dump's events with times, load and init left out."""
    from executorch.devtools import Inspector

    for block in Inspector(etdump_path=str(dump)).event_blocks:
        for event in block.events:
            if event.perf_data is not None and event.name not in ("Program::load_method", "Method::init"):
                yield event


def per_op(dump: Path, skip: int = 1) -> tuple[float | None, dict]:
    """(median ms of Method::execute, {event name: [count, summed median ms]}) over the calls
    after the first `skip` (run_with_etdump's one untimed call: a first call pays cold caches and
    XNNPACK's first-run setup); an op run outside a delegate is named "outside:<name>"."""
    total, ops = None, defaultdict(lambda: [0, 0.0])
    for event in _execute_events(dump):
        median = float(np.median(event.perf_data.raw[skip:]))
        if event.name == "Method::execute":
            total = median
            continue
        name = event.name if event.is_delegated_op else f"outside:{event.name}"
        ops[name][0] += 1
        ops[name][1] += median
    return total, dict(ops)


def convolution_times(dump: Path, skip: int, count: int = 1) -> tuple[list[float], list[float]]:
    """Per call after the first `skip`: (ms of the delegate's convolution operators, summed, ms
    of the whole Method::execute) of a program holding `count` convolutions (one projection;
    `count` > 1: the per-group form's dense convolution per group). Raises SbexportError unless
    the dump has exactly `count` convolution events (pick_convolutions)."""
    events = list(_execute_events(dump))
    convs = pick_convolutions(events, count)
    execute = next(e for e in events if e.name == "Method::execute")
    per_call = np.sum([np.asarray(c.perf_data.raw[skip:], dtype=float) for c in convs], axis=0)
    return [float(t) for t in per_call], [float(t) for t in execute.perf_data.raw[skip:]]


def pick_convolutions(events: list, count: int) -> list:
    """The delegated events of `events` (Inspector events: name, is_delegated_op) that are
    XNNPACK's convolution or fully-connected operator, not a transpose, reshape, copy or the
    call around them. Raises SbexportError unless there are exactly `count`."""
    found = [e for e in events if e.is_delegated_op and e.name.startswith(CONVOLUTION_EVENTS)]
    if len(found) != count:
        expected = "one XNNPACK convolution event" if count == 1 else f"{count} XNNPACK convolution events"
        raise SbexportError(f"expected {expected} in the ETDump, found "
                            f"{[e.name for e in found]} among {[e.name for e in events]}")
    return found
