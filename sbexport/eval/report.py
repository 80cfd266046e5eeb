"""The evaluation report: one row per runner (metrics, delta to PyTorch, agreement with
PyTorch's predictions, speed), printed as a table or written as JSON (schema sbexport.eval/1)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from .datasets import Malformed

SCHEMA = "sbexport.eval/1"
SHOWN_MALFORMED = 5      # in the table; the JSON lists up to JSON_MALFORMED
JSON_MALFORMED = 50


@dataclass
class RunnerResult:
    name: str                      # "pytorch" or the artifact folder
    kind: str                      # "pytorch", "onnx", "executorch"
    max_seq: int
    batch: int
    metrics: dict[str, float]
    delta: dict[str, float]        # metric - PyTorch's metric (zeros for PyTorch itself)
    agree: int                     # predictions equal to PyTorch's (words for NER; for STS-B, those within
                                   # verify's parity bound)
    compared: int
    examples: int
    truncated: int                 # examples cut to max_seq
    seconds: float                 # inside the model only

    @property
    def agreement(self) -> float:
        return self.agree / self.compared if self.compared else float("nan")

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class EvalReport:
    task: str
    data: str
    format: str
    examples: int
    malformed: list[Malformed]
    agreement_unit: str                    # "example" or "word"
    limit: int | None = None
    reference: dict | None = None          # the ModelSource of the PyTorch model, when known
    runners: list[RunnerResult] = field(default_factory=list)

    def table(self) -> str:
        """One line per runner (tabulate, plain text), then the data's facts and what was skipped."""
        from tabulate import tabulate

        header = ("runner", "metrics", "delta vs pytorch", "agreement", "malformed", "truncated", "examples/s")
        rows = [_row(r, len(self.malformed), self.agreement_unit) for r in self.runners]
        # The cells are formatted here (several metrics share a cell), so tabulate only aligns them.
        lines = [tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True,
                          colalign=["left"] * 4 + ["right"] * 3)]
        lines.append(f"{self.task} on {self.data} ({self.format}): {self.examples} examples"
                     + (f" (--limit {self.limit})" if self.limit else ""))
        if self.malformed:
            shown = "; ".join(str(m) for m in self.malformed[:SHOWN_MALFORMED])
            hidden = len(self.malformed) - SHOWN_MALFORMED
            more = f"; and {hidden} more" if hidden > 0 else ""
            lines.append(f"skipped {len(self.malformed)} malformed rows: {shown}{more}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return _finite({
            "schema": SCHEMA, "task": self.task,
            "data": {"path": self.data, "format": self.format, "examples": self.examples, "limit": self.limit,
                     "malformed": {"count": len(self.malformed),
                                   "first": [{"where": m.where, "reason": m.reason}
                                             for m in self.malformed[:JSON_MALFORMED]]}},
            "reference": self.reference,
            "agreement_unit": self.agreement_unit,
            "runners": [{"name": r.name, "kind": r.kind, "max_seq": r.max_seq, "batch": r.batch,
                         "metrics": r.metrics, "delta": r.delta, "agreement": r.agreement,
                         "agree": r.agree, "compared": r.compared, "examples": r.examples,
                         "truncated": r.truncated, "model_seconds": round(r.seconds, 4),
                         "examples_per_second": r.examples_per_second} for r in self.runners],
        })


def report_json(report: EvalReport) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False)


def _row(r: RunnerResult, malformed: int, unit: str) -> tuple[str, ...]:
    is_reference = r.kind == "pytorch"
    return (r.name if is_reference else f"{r.name} ({r.kind})",
            " ".join(f"{k} {v:.4f}" for k, v in r.metrics.items()),
            "-" if is_reference else " ".join(f"{k} {v:+.4f}" for k, v in r.delta.items()),
            "-" if is_reference else f"{r.agreement:.2%} ({r.agree}/{r.compared} {unit}s)",
            str(malformed), str(r.truncated), f"{r.examples_per_second:.1f}")


def _finite(value):
    """nan / inf -> None, so that the JSON is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
