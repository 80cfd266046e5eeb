"""Benchmark SqueezeBERT against BERT-base, as a pipeline (pipeline.py) over a target: the host
CPU (host.py) or a device implementing the same runner interface (target.py).

    inputs.py    BenchConfig and the check of every input before any work
    cache.py     the work folder: one export per model and runtime, reused by cache key
    flops.py     FLOPs counted on the eager model
    target.py    the runner interface a host or a device implements; the inputs every runtime gets
    host.py      the host target: runners.py loads, timing.py times, memory.py probes peak memory
    machine.py   the host's CPU, its load and scheduler clocks, which runtimes import
    sgemm.py     the measured sgemm ceiling: the fastest library's fp32 matrix product
    progress.py  the plan (list of steps) and the progress bar walking it
    rows.py      one row per runtime x model x length; notes.py says how each figure was measured
    report.py    the table, markdown, versioned JSON and PNG plot

    from sbexport.bench import BenchConfig, run_bench, table
    result = run_bench(BenchConfig(seq_lens=(128,)), json_path="bench.json", plot_path="bench.png")
    print(table(result))
"""

from .inputs import MODELS, RUNTIMES, BenchConfig
from .pipeline import run_bench
from .report import SCHEMA, markdown_table, plot, table, write_json
from .target import Loaded, Peak, Target, Timing

__all__ = ["BenchConfig", "run_bench", "table", "markdown_table", "plot", "write_json", "SCHEMA",
           "RUNTIMES", "MODELS", "Target", "Loaded", "Timing", "Peak"]
