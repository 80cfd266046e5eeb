"""`sbexport eval`: accuracy on a labelled file for the PyTorch model and exported artifacts.

    datasets.py  readers: GLUE TSV, JSON lines, SQuAD v1.1 JSON, CoNLL-2003
    metrics.py   accuracy, F1, Matthews correlation, Pearson / Spearman, SQuAD EM / F1, entity F1
    runners.py   batched prediction, the same for PyTorch and every exported file
    evaluate.py  map gold labels, run every runner, score, compare with PyTorch
    report.py    the table and the JSON report (schema sbexport.eval/1)
"""

from .datasets import read_dataset
from .evaluate import evaluate, run_eval
from .report import SCHEMA, EvalReport, report_json

__all__ = ["SCHEMA", "EvalReport", "evaluate", "read_dataset", "report_json", "run_eval"]
