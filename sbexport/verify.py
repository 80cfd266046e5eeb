"""Parity: run the PyTorch reference and an exported file on a sweep of inputs and compare.

The sweep covers batch 1 and 3 (only the fixed batch for a fixed-batch file), sequence lengths
1, 7, 128 and the file's maximum, padded masks (a batch-1 file gets a padded case of its own),
text pairs and real sentences through the artifact's tokenizer. Each output of each case is
compared at the values a consumer reads (a token-level output at real tokens, a sequence-level
output in every row) and passes when
max |got - ref| <= atol + rtol * scale, scale = max |ref| over those values (`compare`; the
task's atol and rtol, and what they were measured on, are in tasks.py). The report gives, per
output, the worst error, the error at padded positions (shown, never judged), the scale and
bound of the case nearest its bound, that error as a fraction of the bound, and how often the
exported file picks the same argmax (and top-5 for vocabularies) as the reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .artifact import open_artifact, update_manifest
from .config import load_config
from .errors import ParityError, SbexportError
from .heads import INPUT_NAMES
from .manifest import Dims, Manifest, ParityFigures
from .runtime import TorchRunner
from .source import build_reference, weights_sha256
from .targets import HOST
from .tasks import Task, get_task

SWEEP_SEQ_LENS = (1, 7, 128)
SWEEP_BATCHES = (1, 3)
SENTENCES = (
    ("A soccer game with multiple males playing.", "Some men are playing a sport."),
    ("The cat sat on the mat while the dog slept by the fire.", "No animal is sleeping."),
    ("Ångström measured the spectrum of the aurora in 1867.", "A scientist studied light."),
)


@dataclass(frozen=True)
class Comparison:
    """One output of one case, compared at the positions a consumer reads."""

    max_abs: float          # max |got - ref| over the compared values; inf when got holds NaN or inf
    padded_max_abs: float   # the same at padded positions of a token-level output (reported, not judged)
    scale: float            # max |ref| over the compared values
    bound: float            # atol + rtol * scale

    @property
    def fraction(self) -> float:
        """The error as a fraction of the bound: above 1 fails."""
        if self.bound > 0:
            return self.max_abs / self.bound
        return 0.0 if self.max_abs == 0 else float("inf")

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.bound


def compare(task: Task, name: str, ref: np.ndarray, got: np.ndarray,
            attention_mask: np.ndarray | None = None) -> Comparison:
    """Compare output `name` of the exported file (`got`) with PyTorch's (`ref`), same shape.

    The pass rule of every parity check in sbexport (verify, eval's STS-B agreement, the
    tests): max |got - ref| <= task.atol + task.rtol * scale, taken over the values a consumer
    reads (real_positions: attention_mask == 1 for a token-level output, every row otherwise;
    every value when attention_mask is None), where scale = max |ref| over those same values.
    A NaN or inf in `got` is an infinite error.
    """
    ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if attention_mask is None:
        real = np.ones(ref.shape, dtype=bool)
    else:
        real = real_positions(task, name, attention_mask, ref.shape)
    diff = np.abs(ref - got)
    diff[~np.isfinite(got)] = np.inf   # max() would skip a NaN silently
    scale = float(np.abs(ref[real]).max(initial=0.0))
    return Comparison(max_abs=float(diff[real].max(initial=0.0)),
                      padded_max_abs=float(diff[~real].max(initial=0.0)),
                      scale=scale, bound=task.atol + task.rtol * scale)


@dataclass
class OutputParity:
    """One output over the whole sweep: its worst case, and how often the file picks the same
    argmax (and top-5 for vocabularies) as the reference at the positions compared."""

    name: str
    max_abs: float = 0.0          # worst error at compared positions, any case
    padded_max_abs: float = 0.0   # worst error at padded positions, any case (not judged)
    scale: float = 0.0            # scale of the case nearest its bound (worst fraction)
    bound: float = 0.0            # bound of that case
    fraction: float = 0.0         # worst error / bound over the cases: above 1 fails
    argmax_agree: int = 0
    argmax_total: int = 0
    topk_agree: int = 0
    topk_total: int = 0

    def add(self, result: Comparison, ref: np.ndarray, got: np.ndarray, real: np.ndarray,
            axis_of_classes: int | None) -> None:
        """Fold in one case: its Comparison, and argmax agreement over the rows of `real`."""
        self.max_abs = max(self.max_abs, result.max_abs)
        self.padded_max_abs = max(self.padded_max_abs, result.padded_max_abs)
        if result.fraction >= self.fraction:
            self.fraction, self.scale, self.bound = result.fraction, result.scale, result.bound
        if axis_of_classes is not None and ref.shape[axis_of_classes] > 1:
            rows = real.all(axis=axis_of_classes)   # a position is real for all its classes or none
            agree = (ref.argmax(axis_of_classes) == got.argmax(axis_of_classes))[rows]
            self.argmax_agree += int(agree.sum())
            self.argmax_total += agree.size
            if ref.shape[axis_of_classes] > 5:
                def top5(values):
                    return np.sort(np.argsort(-values, axis=axis_of_classes).take(range(5), axis_of_classes),
                                   axis_of_classes)
                top_ref, top_got = top5(ref), top5(got)
                same = (top_ref == top_got).all(axis=axis_of_classes)[rows]
                self.topk_agree += int(same.sum())
                self.topk_total += same.size


@dataclass
class ParityReport:
    folder: str
    task: str
    atol: float
    rtol: float
    cases: int = 0
    outputs: dict[str, OutputParity] = field(default_factory=dict)
    target: dict = field(default_factory=lambda: {"name": "host"})   # where the file ran (targets/)

    @property
    def passed(self) -> bool:
        return self.cases > 0 and all(o.fraction <= 1.0 for o in self.outputs.values())

    def to_dict(self) -> dict:
        return {"passed": self.passed, "atol": self.atol, "rtol": self.rtol, "cases": self.cases,
                "outputs": {k: asdict(v) for k, v in self.outputs.items()}}

    def table(self) -> str:
        rows = [f"{'output':<18} {'max abs err':>11} {'padded err':>11} {'scale':>9} {'bound':>9} "
                f"{'of bound':>9} {'argmax agree':>13} {'top-5 agree':>12}"]
        for o in self.outputs.values():
            arg = f"{o.argmax_agree}/{o.argmax_total}" if o.argmax_total else "-"
            top = f"{o.topk_agree}/{o.topk_total}" if o.topk_total else "-"
            rows.append(f"{o.name:<18} {o.max_abs:>11.3e} {o.padded_max_abs:>11.3e} {o.scale:>9.3g} "
                        f"{o.bound:>9.3g} {o.fraction:>9.1%} {arg:>13} {top:>12}")
        if self.target.get("emulated"):
            rows.insert(0, emulated_line(self.target))
        verdict = "PASS" if self.passed else "FAIL"
        rows.append(f"{verdict}: {self.cases} cases; each output within atol {self.atol:g} + rtol {self.rtol:g} "
                    f"x scale (max |ref|) at real positions; padded positions are not judged")
        return "\n".join(rows)

    def raise_on_failure(self) -> None:
        if not self.outputs:
            raise ParityError(f"{self.folder}: parity not checked for {self.task}: the sweep ran no case")
        if not self.passed:
            worst = max(self.outputs.values(), key=lambda o: o.fraction)
            raise ParityError(f"{self.folder}: parity FAILED for {self.task}: {worst.name} differs from "
                              f"PyTorch by {worst.max_abs:.3e} > bound {worst.bound:.3e} (atol {self.atol:g} "
                              f"+ rtol {self.rtol:g} x scale {worst.scale:.3g})")


def emulated_line(target: dict) -> str:
    """The report's first line when the file ran on an emulated target (`target`: a report's
    target record, as targets' describe() gives it plus max_seq)."""
    return (f"ran on {target['name']} (qemu -cpu {target['cpu']}, emulated), {target.get('runtime', '?')} "
            f"{target.get('arch', '?')}, sequences up to {target.get('max_seq')}")


def verify_folder(folder: str | Path, reference: torch.nn.Module | None = None, threads: int = 0,
                  log: Callable[[str], None] = print, shown_as: str | Path | None = None,
                  target=None) -> ParityReport:
    """Check the artifact's hashes, run the sweep, record the figures in its manifest and
    return the report. A quantized artifact (manifest `quantization`) is judged by the
    accuracy guard instead, on the host, and gets its agreement.AgreementReport (same
    interface). `shown_as` names the folder in the report and in errors (export verifies
    its staging folder and names the destination the user gave). `target`
    (targets.open_target) is where the file runs: the host by default; elsewhere the sweep may
    be shorter and the manifest keeps the host's figures. Raises SbexportError for a tampered
    or unloadable artifact, ParityError for an output of
    the wrong shape."""
    folder = Path(folder)
    name = str(shown_as if shown_as is not None else folder)
    manifest = open_artifact(folder)
    task = get_task(manifest.task)
    if reference is None:
        reference = rebuild_reference(folder, manifest, task)
    if manifest.quantization is not None:   # an int8 file is judged by agreement, not by the fp32 bound
        from .agreement import guard_folder, manifest_options
        return guard_folder(folder, reference, manifest_options(manifest), threads, log=log, shown_as=shown_as,
                            target=target)
    target = HOST if target is None else target
    report = ParityReport(name, task.name, task.atol, task.rtol)
    with target.open_runner(folder / manifest.model_file, INPUT_NAMES, threads) as runner:
        for feeds in sweep(task, manifest.dims, reference.config, folder, max_seq=target.max_seq):
            with torch.no_grad():
                expected = reference_outputs(reference, task, feeds)
            got = runner.run(feeds)
            if len(got) != len(expected):
                raise ParityError(f"{name}: the file gives {len(got)} outputs, PyTorch {len(expected)}")
            for output, ref, out in zip(task.outputs, expected, got):
                if ref.shape != out.shape:
                    raise ParityError(f"{name}: output {output} has shape {out.shape}, PyTorch gives {ref.shape}")
                real = real_positions(task, output, feeds["attention_mask"], ref.shape)
                report.outputs.setdefault(output, OutputParity(output)).add(
                    compare(task, output, ref, out, feeds["attention_mask"]), ref, out, real,
                    task.class_axis(output))
            report.cases += 1
        report.target = {**target.describe(runner), "max_seq": target.max_seq}
    record_figures(folder, target, log, parity=ParityFigures.from_json(report.to_dict()))
    log(report.table())
    return report


def record_figures(folder: Path, target, log: Callable[[str], None], **figures) -> None:
    """Write `figures` (manifest fields: parity, or agreement for int8) into the artifact's
    manifest when `target` keeps its figures there (the host does; an emulated CPU's shorter
    sweep does not replace them). A read-only artifact is still verified: a note says so."""
    if not target.records_in_manifest:
        return
    try:
        update_manifest(folder, **figures)
    except SbexportError as e:
        log(f"note: the figures were not recorded in the manifest ({e})")


def rebuild_reference(folder: Path, manifest: Manifest, task: Task) -> torch.nn.Module:
    """The reference the artifact was made from: its manifest's source (seed or checkpoint)
    built with its config.json, which holds every override the export applied. Raises
    SbexportError when the rebuilt weights are not the exported reference's (their sha256
    differs from the manifest's reference_sha256): a parity sweep against another model
    would report the difference as the file's fault."""
    source = manifest.source
    model = build_reference(task, source, config=load_config(folder / "config.json"))
    if weights_sha256(model) != manifest.reference_sha256:
        drawn = f"random weights drawn from seed {source.seed}" if source.random_init else \
            f"the checkpoint {source.checkpoint} (with any head it lacks drawn from seed {source.seed})"
        raise SbexportError(
            f"{folder}: the PyTorch reference rebuilt from the manifest ({drawn}) is not the model the "
            f"artifact was exported from: its weights' sha256 differs from the manifest's reference_sha256 "
            f"(exported by sbexport {manifest.sbexport_version} with torch {manifest.torch_version}, rebuilt "
            f"by sbexport {__version__} with torch {torch.__version__}, whose weight initialisation differs); "
            f"parity cannot be checked against it: re-export the artifact")
    return model


def reference_outputs(model: torch.nn.Module, task: Task, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The reference's outputs for `feeds`, in the task's output order (runtime.TorchRunner)."""
    return TorchRunner(model, task.outputs).run(feeds)


def sweep(task: Task, dims: Dims, config, folder: Path, max_seq: int | None = None):
    """Yield the input dicts of the parity sweep (int64 numpy arrays) within the file's `dims`;
    `max_seq` caps the sequences (the reduced sweep of an emulated target) below the file's
    maximum."""
    lo_batch, hi_batch = dims.batch
    batches = [b for b in SWEEP_BATCHES if lo_batch <= b <= hi_batch] or [lo_batch]
    max_seq = min(dims.sequence[1], max_seq or dims.sequence[1])
    seq_lens = sorted({s for s in SWEEP_SEQ_LENS if s <= max_seq} | {max_seq})
    rng = np.random.default_rng(0)
    for batch in batches:
        for seq_len in seq_lens:
            yield _random_inputs(task, config, batch, seq_len, rng)
    if batches == [1] and max_seq > 1:
        # A batch-1 file (ExecuTorch's fixed batch) has no second row to pad: without this case
        # its attention mask would never be exercised.
        yield _random_inputs(task, config, 1, max_seq, rng, pad_first=True)
    tokenizer = _artifact_tokenizer(folder)
    if tokenizer is not None:
        for batch in batches:
            texts = _sentences(task, batch)
            if not any(task.head.unfit(tokenizer, t, max_seq) for t in texts):
                yield task.head.encode(tokenizer, texts, max_seq).feeds


def _random_inputs(task: Task, config, batch: int, seq_len: int, rng, pad_first: bool = False) -> dict[str, np.ndarray]:
    """Random ids, every row but the first (every row when `pad_first`) padded to a random
    length, pair-style token types."""
    shape = task.input_shape(batch, seq_len)
    ids = rng.integers(1, config.vocab_size, shape, dtype=np.int64)
    lengths = rng.integers(1, seq_len + 1, shape[:-1])
    lengths.reshape(-1)[0] = rng.integers(1, seq_len) if pad_first else seq_len
    mask = (np.arange(seq_len) < lengths[..., None]).astype(np.int64)
    types = (np.arange(seq_len) >= (lengths[..., None] + 1) // 2).astype(np.int64) * mask
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}


def _sentences(task: Task, batch: int) -> list:
    """`batch` examples of real sentences (heads.Texts): pairs where the task takes pairs, and
    for multiple choice the task's number of endings to each context."""
    pairs = [SENTENCES[i % len(SENTENCES)] for i in range(batch)]
    if task.head.choices:
        return [(first, [f"{second} ({k})" for k in range(task.num_choices)]) for first, second in pairs]
    return [(first, second if task.pair else None) for first, second in pairs]


def _artifact_tokenizer(folder: Path):
    from .tokenizer import SqueezeBertTokenizer, has_tokenizer
    if has_tokenizer(folder):
        return SqueezeBertTokenizer.from_pretrained(folder)
    return None


def real_positions(task: Task, name: str, attention_mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Which values of output `name` (of `shape`) a consumer reads: a bool array of `shape`.

    A token-level output (its axes hold "sequence": [batch, sequence, ...]) is read only at
    real tokens, attention_mask == 1 ([batch, sequence]); the values at padded positions are
    computed but never used (a head skips them, the pooler takes position 0). A
    sequence-level output (pooler_output, sequence-classification and multiple-choice logits)
    is read in every row.
    """
    if "sequence" not in task.output_axes(name):
        return np.ones(shape, dtype=bool)
    mask = attention_mask.astype(bool)
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (len(shape) - mask.ndim)), shape)


def report_json(report: ParityReport) -> str:
    return json.dumps({"schema": "sbexport.verify/2", "folder": report.folder, "task": report.task,
                       "target": report.target, **report.to_dict()}, indent=2)
