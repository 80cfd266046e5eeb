"""The timing loop of the host: models run interleaved call by call on fixed inputs.

Timing of one call is wall time (perf_counter_ns) around the call alone. Per model: the first
call at a shape (kept out of the statistics), `warmup` untimed calls, `runs` timed calls; the
models take turns call by call, their order reversed every call, so that drift of the machine
(a frequency change, another process) hits all of them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .machine import cpu_wait_pct, scheduler_times
from .target import Timing


def time_interleaved(calls: dict[str, Callable], feeds: dict[str, dict], warmup: int, runs: int) -> dict[str, Timing]:
    """Time each of `calls` (name -> callable taking its `feeds[name]`), interleaved.

    Returns {name: Timing}; cpu_wait_pct is measured over the whole timed block (shared by the
    models, since they ran in it together). Raises what a call raises."""
    order = list(calls)
    first = {name: _timed(calls[name], feeds[name]) for name in order}
    for i in range(warmup):
        for name in _turn(order, i):
            calls[name](feeds[name])
    times = {name: [] for name in order}
    sched_before, wall_before = scheduler_times(), time.perf_counter_ns()
    for i in range(runs):
        for name in _turn(order, i):
            times[name].append(_timed(calls[name], feeds[name]))
    wait = cpu_wait_pct(sched_before, wall_before)
    return {name: Timing(first[name], times[name], wait) for name in order}


def _turn(order: list[str], i: int) -> list[str]:
    return order if i % 2 == 0 else order[::-1]


def _timed(call: Callable, feeds) -> float:
    started = time.perf_counter_ns()
    call(feeds)
    return (time.perf_counter_ns() - started) / 1e9
