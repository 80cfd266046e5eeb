"""Benchmark SqueezeBERT against BERT-base on the host CPU: host.py measures, flops.py counts,
memory.py measures peak RSS in a fresh process, report.py writes the table, JSON and plot.

    from sbexport.bench import BenchConfig, run_bench, table
    result = run_bench(BenchConfig(seq_lens=(128,)), json_path="bench.json", plot_path="bench.png")
    print(table(result))
"""

from .host import MODELS, RUNTIMES, BenchConfig, run_bench
from .report import SCHEMA, markdown_table, plot, table, write_json

__all__ = ["BenchConfig", "run_bench", "table", "markdown_table", "plot", "write_json", "SCHEMA",
           "RUNTIMES", "MODELS"]
