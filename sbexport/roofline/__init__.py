"""`sbexport roofline`: the machine's fp32 ceilings and the GFLOP/s of every SqueezeBERT projection
shape in every runtime. shapes.py holds the shapes and the FLOP formula, ceilings.py measures
the roofs, runtimes.py runs one projection per runtime (the hook for kernels/), run.py measures,
report.py writes the table, JSON and plot.

    from sbexport.roofline import RooflineConfig, run_roofline, table
    result = run_roofline(RooflineConfig(seq_lens=(128,)), json_path="roofline.json", plot_path="roofline.png")
    print(table(result))
"""

from .report import SCHEMA, json_schema, plot, table, write_json
from .run import RooflineConfig, quick_config, run_roofline
from .runtimes import RUNTIMES
from .shapes import FORMULA, Projection, projections

__all__ = ["RooflineConfig", "quick_config", "run_roofline", "table", "plot", "write_json", "json_schema", "SCHEMA",
           "RUNTIMES", "FORMULA", "Projection", "projections"]
