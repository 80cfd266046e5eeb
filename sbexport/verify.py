"""Parity: run the PyTorch reference and an exported file on a sweep of inputs and compare.

The sweep covers batch 1 and 3 (only the fixed batch for a fixed-batch file), sequence lengths
1, 7, 128 and the file's maximum, padded masks, text pairs and real sentences through the
artifact's tokenizer. For each output it reports the largest absolute error, the largest error
relative to the reference's scale (max |d| / max |ref|), and how often the exported file picks
the same argmax (and top-5 for vocabularies) as the reference. A file fails when any absolute
error exceeds the task's tolerance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .artifact import open_artifact, update_manifest
from .config import load_config
from .errors import ParityError, SbexportError
from .runtime import open_runner
from .source import ModelSource, build_reference
from .tasks import INPUT_NAMES, Task, get_task

SWEEP_SEQ_LENS = (1, 7, 128)
SWEEP_BATCHES = (1, 3)
SENTENCES = (
    ("A soccer game with multiple males playing.", "Some men are playing a sport."),
    ("The cat sat on the mat while the dog slept by the fire.", "No animal is sleeping."),
    ("Ångström measured the spectrum of the aurora in 1867.", "A scientist studied light."),
)


@dataclass
class OutputParity:
    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    argmax_agree: int = 0
    argmax_total: int = 0
    topk_agree: int = 0
    topk_total: int = 0

    def add(self, ref: np.ndarray, got: np.ndarray, axis_of_classes: int | None) -> None:
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        # A NaN or inf from the file is an infinite error: max() would skip a NaN silently.
        worst = float(diff.max(initial=0.0)) if np.isfinite(diff).all() else float("inf")
        self.max_abs = max(self.max_abs, worst)
        scale = float(np.abs(ref).max(initial=0.0)) or 1.0
        self.max_rel = max(self.max_rel, worst / scale)
        if axis_of_classes is not None and ref.shape[axis_of_classes] > 1:
            agree = ref.argmax(axis_of_classes) == got.argmax(axis_of_classes)
            self.argmax_agree += int(agree.sum())
            self.argmax_total += agree.size
            if ref.shape[axis_of_classes] > 5:
                top_ref = np.sort(np.argsort(-ref, axis=axis_of_classes).take(range(5), axis_of_classes), axis_of_classes)
                top_got = np.sort(np.argsort(-got, axis=axis_of_classes).take(range(5), axis_of_classes), axis_of_classes)
                same = (top_ref == top_got).all(axis=axis_of_classes)
                self.topk_agree += int(same.sum())
                self.topk_total += same.size


@dataclass
class ParityReport:
    folder: str
    task: str
    atol: float
    cases: int = 0
    outputs: dict[str, OutputParity] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.cases > 0 and all(o.max_abs <= self.atol for o in self.outputs.values())

    def to_dict(self) -> dict:
        return {"passed": self.passed, "atol": self.atol, "cases": self.cases,
                "outputs": {k: asdict(v) for k, v in self.outputs.items()}}

    def table(self) -> str:
        rows = [f"{'output':<18} {'max abs err':>12} {'max rel err':>12} {'argmax agree':>14} {'top-5 agree':>12}"]
        for o in self.outputs.values():
            arg = f"{o.argmax_agree}/{o.argmax_total}" if o.argmax_total else "-"
            top = f"{o.topk_agree}/{o.topk_total}" if o.topk_total else "-"
            rows.append(f"{o.name:<18} {o.max_abs:>12.3e} {o.max_rel:>12.3e} {arg:>14} {top:>12}")
        verdict = "PASS" if self.passed else "FAIL"
        rows.append(f"{verdict}: {self.cases} cases, tolerance {self.atol:g} absolute")
        return "\n".join(rows)

    def raise_on_failure(self) -> None:
        if not self.outputs:
            raise ParityError(f"{self.folder}: parity not checked for {self.task}: the sweep ran no case")
        if not self.passed:
            worst = max(self.outputs.values(), key=lambda o: o.max_abs)
            raise ParityError(f"{self.folder}: parity FAILED for {self.task}: {worst.name} differs from "
                              f"PyTorch by {worst.max_abs:.3e} > tolerance {self.atol:g}")


def verify_folder(folder: str | Path, reference: torch.nn.Module | None = None, threads: int = 0,
                  log: Callable[[str], None] = print) -> ParityReport:
    """Check the artifact's hashes, run the sweep, record the figures in its manifest and
    return the report. Raises SbexportError for a tampered or unloadable artifact."""
    folder = Path(folder)
    manifest = open_artifact(folder)
    task = get_task(manifest["task"])
    if reference is None:
        reference = rebuild_reference(folder, manifest, task)
    runner = open_runner(folder / manifest["model_file"], INPUT_NAMES, threads)
    report = ParityReport(str(folder), task.name, task.atol)
    for feeds in sweep(task, manifest, reference.config, folder):
        with torch.no_grad():
            expected = reference_outputs(reference, task, feeds)
        got = runner.run(feeds)
        for name, ref, out in zip(task.outputs, expected, got):
            if ref.shape != out.shape:
                raise ParityError(f"{folder}: output {name} has shape {out.shape}, PyTorch gives {ref.shape}")
            report.outputs.setdefault(name, OutputParity(name)).add(ref, out, _class_axis(task, name))
        report.cases += 1
    try:
        update_manifest(folder, parity=report.to_dict())
    except SbexportError as e:   # a read-only artifact can still be verified
        log(f"note: the figures were not recorded in the manifest ({e})")
    log(report.table())
    return report


def rebuild_reference(folder: Path, manifest: dict, task: Task) -> torch.nn.Module:
    """The reference the artifact was made from: its manifest's source (seed or checkpoint)
    built with its config.json, which holds every override the export applied."""
    source = ModelSource.from_dict(manifest["source"])
    return build_reference(task, source, config=load_config(folder / "config.json"))


def reference_outputs(model: torch.nn.Module, task: Task, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return [getattr(out, name).numpy() for name in task.outputs]


def sweep(task: Task, manifest: dict, config, folder: Path):
    """Yield the input dicts of the parity sweep (int64 numpy arrays)."""
    lo_batch, hi_batch = manifest["dims"]["batch"]
    batches = [b for b in SWEEP_BATCHES if lo_batch <= b <= hi_batch] or [lo_batch]
    max_seq = manifest["dims"]["sequence"][1]
    seq_lens = sorted({s for s in SWEEP_SEQ_LENS if s <= max_seq} | {max_seq})
    rng = np.random.default_rng(0)
    for batch in batches:
        for seq_len in seq_lens:
            yield _random_inputs(task, config, batch, seq_len, rng)
    tokenizer = _artifact_tokenizer(folder)
    # [CLS] a [SEP] (b [SEP]) with at least one token of each text must fit.
    if tokenizer is not None and max_seq >= (5 if task.pair else 3):
        for batch in batches:
            yield _sentence_inputs(task, tokenizer, batch, max_seq)


def _random_inputs(task: Task, config, batch: int, seq_len: int, rng) -> dict[str, np.ndarray]:
    """Random ids, every row but the first padded to a random length, pair-style token types."""
    shape = (batch, task.num_choices, seq_len) if task.head == "multiple-choice" else (batch, seq_len)
    ids = rng.integers(1, config.vocab_size, shape, dtype=np.int64)
    lengths = rng.integers(1, seq_len + 1, shape[:-1])
    lengths.reshape(-1)[0] = seq_len
    mask = (np.arange(seq_len) < lengths[..., None]).astype(np.int64)
    types = (np.arange(seq_len) >= (lengths[..., None] + 1) // 2).astype(np.int64) * mask
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}


def _sentence_inputs(task: Task, tokenizer, batch: int, max_seq: int) -> dict[str, np.ndarray]:
    """Real sentences (pairs where the task takes pairs), padded to the longest on the right."""
    pairs = [SENTENCES[i % len(SENTENCES)] for i in range(batch)]
    first = [p[0] for p in pairs]
    second = [p[1] for p in pairs] if task.pair else None
    if task.head == "multiple-choice":   # every ending paired with the same context
        first = [f for f in first for _ in range(task.num_choices)]
        second = [f"{p[1]} ({k})" for p in pairs for k in range(task.num_choices)]
    enc = tokenizer(first, second, padding="longest", truncation=True, max_length=max_seq, return_tensors="np")
    enc = {k: np.asarray(enc[k], dtype=np.int64) for k in INPUT_NAMES}
    if task.head == "multiple-choice":
        enc = {k: v.reshape(batch, task.num_choices, -1) for k, v in enc.items()}
    return enc


def _artifact_tokenizer(folder: Path):
    from .tokenizer import SqueezeBertTokenizer
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        return SqueezeBertTokenizer.from_pretrained(folder)
    return None


def _class_axis(task: Task, name: str) -> int | None:
    """The axis argmax agreement is measured over, or None for outputs without classes."""
    if name in ("last_hidden_state", "pooler_output") or task.problem_type == "regression":
        return None
    return -1


def report_json(report: ParityReport) -> str:
    return json.dumps({"schema": "sbexport.verify/1", "folder": report.folder, "task": report.task,
                       **report.to_dict()}, indent=2)
