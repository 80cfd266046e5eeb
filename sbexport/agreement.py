"""The accuracy guard of a quantized artifact: how often it decides what the fp32 PyTorch model
decides, and how far its outputs are from fp32's.

An int8 file cannot meet the fp32 parity bound (verify.compare), nor should it: what a user
needs is the same answers. The guard runs the PyTorch reference and the file on verify's sweep
and on real sentences (sbexport/data/guard_en.tsv, not the calibration set) and counts the
decisions that agree, read from the head's output axes (decisions()):

    labels, choices, vocab   the argmax of each row, or of each real token (tags, masked tokens;
                             the top-5 set of a vocabulary shown beside it, not judged)
    a span (start, end)      argmax start and argmax end over real tokens, both equal
    regression (stsb)        the order of every pair of scores (concordance: what Spearman reads)
    embeddings (hidden)      cosine similarity >= COSINE_BAR, per real token of
                             last_hidden_state and per row of pooler_output

with each output's max and mean absolute error at real positions. It passes when every judged
agreement on the sentences (on the sweep when the artifact has no tokenizer) is at least the
bar (--min-agreement, 99% by default) and, when a labelled file is given, no metric of
`sbexport eval` drops by more than --max-metric-drop (1 point).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ParityError
from .heads import INPUT_NAMES
from .tasks import Task

GUARD_TEXTS = "guard_en.tsv"   # sbexport/data: 36 tab-separated pairs, none in the calibration set
# An int8 embedding "agrees" with fp32's when their cosine similarity reaches this. Measured on the
# MiniLM checkpoint converted by convert-bert, conv-only static int8 (Intel kind): worst per-token
# cosine 0.9985 on real sentences, mean 0.9998; a destructive recipe (per-tensor weights, zero
# calibration) falls to 0.6. See tests/test_quantize.py.
COSINE_BAR = 0.99


@dataclass
class Measure:
    """One judged decision over a group of cases: how many agree, out of how many."""

    agree: int = 0
    total: int = 0
    judged: bool = True                      # False: shown beside the judged ones
    min_cosine: float | None = None          # features only
    pairs: list = field(default_factory=list, repr=False)   # regression: (ref, got) scores, judged at the end

    @property
    def rate(self) -> float:
        return self.agree / self.total if self.total else float("nan")


@dataclass
class OutputError:
    """An output's error at real positions over a group of cases."""

    max_abs: float = 0.0
    abs_sum: float = 0.0
    count: int = 0
    scale: float = 0.0      # max |ref|

    @property
    def mean_abs(self) -> float:
        return self.abs_sum / self.count if self.count else 0.0


@dataclass
class Group:
    """The cases of one kind ("sweep" or "sentences")."""

    cases: int = 0
    measures: dict[str, Measure] = field(default_factory=dict)
    errors: dict[str, OutputError] = field(default_factory=dict)


@dataclass
class AgreementReport:
    """verify's report for a quantized artifact (same interface as verify.ParityReport)."""

    folder: str
    task: str
    min_agreement: float
    max_metric_drop: float
    groups: dict[str, Group] = field(default_factory=dict)
    metric_drops: dict[str, float] = field(default_factory=dict)   # eval metric: fp32 - int8 (fractions)
    eval_data: str | None = None
    target: dict = field(default_factory=lambda: {"name": "host"})   # where the file ran (targets/)

    @property
    def cases(self) -> int:
        return sum(g.cases for g in self.groups.values())

    @property
    def judged(self) -> str | None:
        """The group the bar judges: the real sentences when the artifact could encode them,
        else verify's sweep. The sweep's random token ids are far outside what calibration
        saw (MiniLM, features: 69.5% of its token embeddings at cosine >= 0.99, against 99.4%
        on the sentences), so it is reported beside them, not judged, when sentences exist."""
        return "sentences" if "sentences" in self.groups else ("sweep" if "sweep" in self.groups else None)

    @property
    def agreement(self) -> float:
        """The lowest agreement of any measure of the judged group (what the bar judges)."""
        group = self.groups.get(self.judged) if self.judged else None
        rates = [m.rate for m in group.measures.values() if m.total and m.judged] if group else []
        return min(rates) if rates else float("nan")

    @property
    def passed(self) -> bool:
        return (self.cases > 0 and bool(self.agreement >= self.min_agreement)
                and all(drop <= self.max_metric_drop for drop in self.metric_drops.values()))

    def to_dict(self) -> dict:
        return {"passed": self.passed, "judged_by": "agreement", "judged": self.judged,
                "min_agreement": self.min_agreement,
                "agreement": self.agreement, "cases": self.cases, "max_metric_drop": self.max_metric_drop,
                "eval_data": self.eval_data, "metric_drops": self.metric_drops,
                "groups": {name: {"cases": g.cases,
                                  "measures": {k: {"agree": m.agree, "total": m.total, "rate": m.rate,
                                                   "min_cosine": m.min_cosine} for k, m in g.measures.items()},
                                  "errors": {k: {"max_abs": e.max_abs, "mean_abs": e.mean_abs, "scale": e.scale}
                                             for k, e in g.errors.items()}}
                           for name, g in self.groups.items()}}

    def table(self) -> str:
        rows = [f"{'cases':<10} {'decision':<26} {'agree':>12} {'rate':>8}   output errors (max / mean abs, scale)"]
        for name, g in self.groups.items():
            name = name if name == self.judged else f"({name})"
            errors = "; ".join(f"{k} {e.max_abs:.2e} / {e.mean_abs:.2e}, {e.scale:.3g}" for k, e in g.errors.items())
            for i, (k, m) in enumerate(g.measures.items()):
                cos = f" (min cos {m.min_cosine:.4f})" if m.min_cosine is not None else ""
                rows.append(f"{name if i == 0 else '':<10} {k:<26} {f'{m.agree}/{m.total}':>12} {m.rate:>8.2%}   "
                            f"{errors if i == 0 else ''}{cos}")
        for metric, drop in self.metric_drops.items():
            rows.append(f"{'eval':<10} {metric:<26} drop {drop * 100:+.2f} points (bar {self.max_metric_drop * 100:g})")
        if self.target.get("emulated"):
            from .verify import emulated_line
            rows.insert(0, emulated_line(self.target))
        verdict = "PASS" if self.passed else "FAIL"
        rows.append(f"{verdict}: int8 judged by agreement with fp32 PyTorch, not by the fp32 parity bound: lowest "
                    f"agreement {self.agreement:.2%} on the {self.judged} (bar {self.min_agreement:.0%}); "
                    f"groups in parentheses are shown, not judged")
        return "\n".join(rows)

    def raise_on_failure(self) -> None:
        if not self.cases or not np.isfinite(self.agreement):
            raise ParityError(f"{self.folder}: agreement not checked for {self.task}: the guard ran no case")
        if self.passed:
            return
        drops = {k: d for k, d in self.metric_drops.items() if d > self.max_metric_drop}
        if drops:
            metric, drop = max(drops.items(), key=lambda kv: kv[1])
            raise ParityError(f"{self.folder}: int8 accuracy guard FAILED for {self.task}: {metric} drops by "
                              f"{drop * 100:.2f} points on {self.eval_data} (bar {self.max_metric_drop * 100:g})")
        group = self.judged
        measure, m = min(((k, m) for k, m in self.groups[group].measures.items() if m.total and m.judged),
                         key=lambda t: t[1].rate)
        raise ParityError(f"{self.folder}: int8 accuracy guard FAILED for {self.task}: {measure} agrees with fp32 "
                          f"PyTorch on {m.rate:.2%} of the {group} ({m.agree}/{m.total}), under the bar "
                          f"{self.min_agreement:.0%} (--min-agreement)")


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------

def measure_group(task: Task, reference: torch.nn.Module, run: Callable, cases: Iterable[dict]) -> Group:
    """Run `reference` and `run` (an exported file's runner.run) on every input dict of `cases`
    and fold their decisions and errors into a Group."""
    from .verify import real_positions, reference_outputs

    group = Group()
    for feeds in cases:
        with torch.no_grad():
            expected = dict(zip(task.outputs, reference_outputs(reference, task, feeds)))
        got = dict(zip(task.outputs, run(feeds)))
        mask = feeds["attention_mask"]
        for name in task.outputs:
            real = real_positions(task, name, mask, expected[name].shape)
            _fold_error(group.errors.setdefault(name, OutputError()), expected[name], got[name], real)
        for key, agree, cosines, pairs in decisions(task, expected, got, mask):
            m = group.measures.setdefault(key, Measure(judged=not key.endswith("(shown)")))
            m.agree, m.total = m.agree + int(np.sum(agree)), m.total + int(np.size(agree))
            if cosines is not None and cosines.size:
                m.min_cosine = min(float(cosines.min()), 1.0 if m.min_cosine is None else m.min_cosine)
            m.pairs.extend(pairs)
        group.cases += 1
    for m in group.measures.values():
        if m.pairs:
            m.agree, m.total = _concordance(m.pairs)
    return group


def _fold_error(error: OutputError, ref: np.ndarray, got: np.ndarray, real: np.ndarray) -> None:
    diff = np.abs(ref.astype(np.float64) - got)[real]
    diff[~np.isfinite(diff)] = np.inf
    error.max_abs = max(error.max_abs, float(diff.max(initial=0.0)))
    error.abs_sum += float(diff.sum())
    error.count += diff.size
    error.scale = max(error.scale, float(np.abs(ref[real]).max(initial=0.0)))


def decisions(task: Task, ref: dict, got: dict, mask: np.ndarray) -> list[tuple]:
    """The decisions of one case: (measure name, bool array of agreements, cosines or None,
    regression score pairs), read from the head's output axes (heads.Head.outputs): an output
    whose last axis is "hidden" is an embedding (cosine); outputs that are all [batch,
    sequence] pick a span (argmax of each over real tokens, all equal); otherwise the argmax of
    the last axis, per row, or per real token when the output has a sequence axis. A name
    ending in "(shown)" is reported, not judged (the top-5 set of a vocabulary: a swap of its
    5th and 6th candidates is no wrong answer)."""
    tokens = mask.astype(bool)                                   # [batch, seq]: real tokens
    axes = task.head.outputs                                     # output name -> its axes
    if task.problem_type == "regression":
        r, g = ref[task.outputs[0]], got[task.outputs[0]]
        return [("score order (pairs)", np.zeros(0, bool), None, list(zip(r[:, 0].tolist(), g[:, 0].tolist())))]
    if all(a == ("batch", "sequence") for a in axes.values()):
        def best(x):   # argmax over real tokens only: [batch]
            return np.where(tokens, x, -np.inf).argmax(-1)
        same = np.logical_and.reduce([best(ref[n]) == best(got[n]) for n in axes])
        return [("answer span", same, None, [])]
    result = []
    for name, name_axes in axes.items():
        at = (lambda x: x[tokens]) if "sequence" in name_axes else (lambda x: x)
        if name_axes[-1] == "hidden":
            cosines = at(_cosine(ref[name], got[name]))
            result.append((f"{name} cosine", cosines >= COSINE_BAR, cosines, []))
            continue
        r, g = ref[name], got[name]
        result.append((f"{name_axes[-1]} argmax", at(r.argmax(-1) == g.argmax(-1)), None, []))
        if name_axes[-1] == "vocab":
            top = np.sort(np.argsort(-r, -1)[..., :5], -1) == np.sort(np.argsort(-g, -1)[..., :5], -1)
            result.append(("top-5 set (shown)", at(top.all(-1)), None, []))
    return result


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def _concordance(pairs: list[tuple[float, float]]) -> tuple[int, int]:
    """(pairs of examples the int8 scores order as the fp32 ones do, pairs compared); pairs
    fp32 scores as tied (within 1e-6) are skipped."""
    ref, got = np.array(pairs).T
    i, j = np.triu_indices(len(ref), 1)
    dr, dg = ref[i] - ref[j], got[i] - got[j]
    judged = np.abs(dr) > 1e-6
    return int((np.sign(dr) == np.sign(dg))[judged].sum()), int(judged.sum())


# ---------------------------------------------------------------------------------------------
# an artifact folder
# ---------------------------------------------------------------------------------------------

def guard_folder(folder: str | Path, reference: torch.nn.Module, options, threads: int = 0,
                 log: Callable[[str], None] = print, shown_as: str | Path | None = None,
                 target=None) -> AgreementReport:
    """Measure the quantized artifact at `folder` against `reference` (fp32 PyTorch) on verify's
    sweep, the guard sentences and, when `options.eval_data` is set, `sbexport eval`'s metric;
    record the figures in its manifest (`agreement`) and return the report. `options` carries
    min_agreement, max_metric_drop and eval_data (export.quantize.QuantizeOptions). `target`
    (targets.open_target; the host when None) is where the file runs: an emulated one caps
    the sequences (sweep and sentences) at its max_seq and leaves the manifest's figures as
    they are."""
    from .artifact import open_artifact
    from .export.quantize import encode_texts, exact_int8_file, read_texts
    from .manifest import AgreementFigures
    from .targets import HOST
    from .tasks import get_task
    from .verify import _artifact_tokenizer, record_figures, sweep

    folder, target = Path(folder), HOST if target is None else target
    manifest = open_artifact(folder)
    task = get_task(manifest.task)
    report = AgreementReport(str(shown_as if shown_as is not None else folder), task.name,
                             options.min_agreement, options.max_metric_drop, eval_data=options.eval_data)
    max_seq = min(manifest.dims.sequence[1], target.max_seq or manifest.dims.sequence[1])
    # On the host, the file whose answers are exact on this CPU (exact_int8_file); an emulated
    # arm64 CPU runs the file itself (its int8 kernels do not saturate).
    exact = exact_int8_file(folder / manifest.model_file, log) if target is HOST else \
        contextlib.nullcontext(folder / manifest.model_file)
    with exact as model_file, target.open_runner(model_file, INPUT_NAMES, threads) as runner:
        cases = sweep(task, manifest.dims, reference.config, folder, max_seq=max_seq)
        report.groups["sweep"] = measure_group(task, reference, runner.run, cases)
        tokenizer = _artifact_tokenizer(folder)
        if tokenizer is not None:
            texts = read_texts(None, GUARD_TEXTS)
            cases = encode_texts(task, tokenizer, texts.records, max_seq)
            report.groups["sentences"] = measure_group(task, reference, runner.run, cases)
        report.target = {**target.describe(runner), "max_seq": target.max_seq}
    if options.eval_data:
        report.metric_drops = metric_drops(task, folder, reference, tokenizer, options.eval_data, log)
    record_figures(folder, target, log, agreement=AgreementFigures.from_json(report.to_dict()))
    log(report.table())
    return report


def manifest_options(manifest):
    """The guard's bars recorded in a quantized artifact's manifest (a manifest.Manifest whose
    `quantization` is set; verify re-judges by them, the labelled file of the export is not
    re-read)."""
    from .export.quantize import QuantizeOptions

    q = manifest.quantization
    return QuantizeOptions(min_agreement=q.min_agreement, max_metric_drop=q.max_metric_drop)


def metric_drops(task: Task, folder: Path, reference, tokenizer, data: str, log) -> dict[str, float]:
    """`sbexport eval` of the reference and the artifact on the labelled file `data`: each
    metric's drop (reference - artifact, fractions; negative when the artifact scores higher)."""
    from .eval import evaluate, read_dataset

    report = evaluate(task, read_dataset(data, task), reference, tokenizer, (str(folder),), log=log)
    fp32, int8 = report.runners[0].metrics, report.runners[1].metrics
    return {k: fp32[k] - int8[k] for k in fp32 if np.isfinite(fp32[k]) and np.isfinite(int8[k])}
