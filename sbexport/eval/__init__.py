"""`sbexport eval`: accuracy on a labelled file for the PyTorch model and exported artifacts.

    datasets.py  readers: GLUE TSV, JSON lines, SQuAD v1.1 JSON, CoNLL-2003
    runners.py   batched prediction, the same for PyTorch and every exported file
    evaluate.py  map gold labels, run every runner, score, compare with PyTorch
    report.py    the table and the JSON report (schema sbexport.eval/1)

What differs per task lives in the registry: a head's data formats, encoding, decoding and
scorer (heads.py), a task's GLUE columns and metrics (tasks.py); the metrics themselves are
sbexport/metrics.py.
"""

from .datasets import read_dataset
from .evaluate import evaluate, run_eval
from .report import SCHEMA, EvalReport, report_json

__all__ = ["SCHEMA", "EvalReport", "evaluate", "read_dataset", "report_json", "run_eval"]
