"""The benchmark's plan as a list of steps, and the progress bar that walks it.

The bar's total is the sum of the plan's step sizes, so it cannot drift from the work: the
pipeline takes each step it does from the plan (Progress.steps) and the bar advances by that
step's size when the step is done.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from .cache import EXPORTED

# No rate and no time left: a step is an export (a minute) or one model call (milliseconds), so
# tqdm's steps-per-second extrapolation was wrong by hours ("4:49:00 left" with 4 minutes to go,
# the first run on the AMD Zen 3 kind). The elapsed time and the count of steps stay.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}]"


@dataclass(frozen=True)
class Step:
    """One unit of the plan. kind: "ceiling_start", "export", "flops", "load", "time", "memory",
    "ceiling_end";
    size: the bar's units (model calls for "time", else 1)."""

    kind: str
    label: str
    runtime: str | None = None
    model: object = None                  # an inputs.BenchModel
    seq_len: int | None = None
    size: int = 1


def plan(config, models, runtimes) -> list[Step]:
    """Every step of a run of `config` on `models` (BenchModels) and `runtimes`, in order."""
    steps = [Step("ceiling_start", "sgemm ceiling")]
    steps += [Step("export", f"export {m.arch} to {rt}", rt, m) for rt in runtimes if rt in EXPORTED for m in models]
    steps += [Step("flops", f"count FLOPs of {m.arch}", model=m) for m in models]
    calls = len(models) * (1 + config.warmup + config.runs)
    for rt in runtimes:
        steps += [Step("load", f"load {m.arch} on {rt}", rt, m) for m in models]
        steps += [Step("time", f"{rt} seq {s}", rt, seq_len=s, size=calls) for s in config.seq_lens]
    if config.memory:
        steps += [Step("memory", f"memory {m.arch} on {rt}", rt, m) for rt in runtimes for m in models]
    steps.append(Step("ceiling_end", "sgemm ceiling again"))
    return steps


class Progress:
    """A tqdm bar on stderr over `steps` (disabled: no output). `done` lists the steps taken."""

    def __init__(self, steps: list[Step], enabled: bool = True):
        from tqdm import tqdm

        self.planned = list(steps)
        self.done: list[Step] = []
        self.bar = tqdm(total=sum(s.size for s in steps), file=sys.stderr, disable=not enabled,
                        bar_format=BAR_FORMAT, dynamic_ncols=True)

    def steps(self, kind: str, runtime: str | None = None) -> Iterator[Step]:
        """The planned steps of `kind` (and `runtime`), in order; each is counted done when
        the caller asks for the next one (or the loop ends), not when an error leaves it."""
        for step in self.planned:
            if step.kind == kind and (runtime is None or step.runtime == runtime):
                self.bar.set_description(step.label)
                yield step
                self.bar.update(step.size)
                self.done.append(step)

    def write(self, message: str) -> None:
        """A line on stderr above the bar."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def open_progress(steps: list[Step], enabled: bool) -> Iterator[Progress]:
    """A Progress over `steps` for the block, closed at its end."""
    bar = Progress(steps, enabled)
    try:
        yield bar
    finally:
        bar.close()
