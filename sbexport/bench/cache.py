"""The benchmark's exports: one artifact folder per (model, runtime) in the work folder, reused
when a folder of the same cache key is there (and valid), exported otherwise.

The key is a hash of everything that shapes the file: format, task, model source, the config
of random weights, the export options, sbexport's version and source code, torch's version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..errors import ExportError, SbexportError
from ..modeling import conv_projections
from ..tasks import Task
from .inputs import INT8_RUNTIMES, LABELS, PER_GROUP_RUNTIMES, BenchConfig, BenchModel, fp32_runtime

EXPORTED = {"onnx": "onnx", "executorch": "executorch"}    # runtime -> export format; eager needs none
EXPORTED.update({form: EXPORTED[fp32] for fp32, form in (INT8_RUNTIMES | PER_GROUP_RUNTIMES).items()})


@contextlib.contextmanager
def work_folder(path: str | None) -> Iterator[Path]:
    """The folder exports go to: `path` (created, kept: a cache for the next run) or, when
    None, a temporary folder removed at the end of the block."""
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="sbexport-bench-") as tmp:
        yield Path(tmp)


def cache_key(runtime: str, task: Task, model: BenchModel, options, max_seq_len: int) -> str:
    """12 hex digits naming everything that shapes the exported file."""
    built = model.build_config.to_dict() if model.build_config is not None else None
    key = json.dumps({"fmt": EXPORTED[runtime], "task": task.name, "source": model.source.to_dict(),
                      "config": built, "options": asdict(options), "max_seq_len": max_seq_len, "sbexport": __version__,
                      "code": code_fingerprint(), "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def export_cached(runtime: str, task: Task, model: BenchModel, config: BenchConfig, workdir: Path,
                  log: Callable[[str], None], export_log: Callable[[str], None] | None = None) -> Path:
    """The artifact folder of `model` for `runtime`, exported unless the work folder holds one
    made from the same inputs and the same sbexport source (and verified, when asked). `log`
    gets the bench's lines (a cached export used), `export_log` (default `log`) what the
    exporter, quantizer and verifier say.

    Raises ExportError naming the model and runtime when the export fails or fails its parity
    check: a benchmark that quietly drops a model is read as a complete one, and a fast wrong
    graph is not worth timing."""
    from ..export import ExecuTorchOptions, OnnxOptions, export_artifact

    export_log = export_log or log
    if runtime in INT8_RUNTIMES.values():
        fp32 = export_cached(fp32_runtime(runtime), task, model, config, workdir, log, export_log)
        return _quantized(runtime, fp32, task, model, log, export_log)
    per_group = runtime in PER_GROUP_RUNTIMES.values()
    if per_group and not conv_projections(model.config):   # no grouped convolution: the same file
        return export_cached(fp32_runtime(runtime), task, model, config, workdir, log, export_log)
    options = OnnxOptions(max_batch=max(1024, config.batch)) if EXPORTED[runtime] == "onnx" \
        else ExecuTorchOptions(batch=config.batch, grouped_conv="per-group" if per_group else "xnnpack")
    max_seq_len = max(config.seq_lens)
    folder = workdir / f"{task.name}-{model.arch}-{runtime}-{cache_key(runtime, task, model, options, max_seq_len)}"
    try:
        if folder.is_dir() and _reusable(folder, config.verify, log, export_log):
            log(f"using cached export {folder}")
            return folder
        return export_artifact(EXPORTED[runtime], task, model.source, folder, options, max_seq_len=max_seq_len,
                               overwrite=True,
                               verify=config.verify, config=model.build_config, log=export_log)
    except SbexportError as e:
        raise ExportError(f"bench stopped: the {LABELS[model.arch]} export to {runtime} failed "
                          f"(nothing was timed): {e}") from None


def _quantized(runtime: str, fp32: Path, task: Task, model: BenchModel, log: Callable[[str], None],
               export_log: Callable[[str], None]) -> Path:
    """The int8 artifact quantized from the fp32 artifact `fp32` (cached beside it), with the
    recipe a user of each model would pick: static int8 convolutions for SqueezeBERT, ONNX
    Runtime's dynamic recipe for a model without convolutions (BERT-base's MatMuls).

    The accuracy guard runs and its figures are recorded (the report shows them) but do not
    stop the bench: latency does not depend on the weights, and random weights' heads decide
    by margins under int8's error, so a failed guard says nothing about the recipe."""
    from ..artifact import open_artifact
    from ..export.quantize import RECIPES, QuantizeOptions, TextSet, quantize_artifact
    from .target import feeds_for

    folder = fp32.with_name(f"{fp32.name}-int8")
    try:
        manifest = open_artifact(folder)
        if manifest.quantization is not None and manifest.agreement is not None:
            log(f"using cached export {folder}")
            return folder
    except SbexportError:
        pass
    recipe = RECIPES["static" if open_artifact(fp32).details.graph.conv_groups else "dynamic"]
    # Random weights have no tokenizer and no meaning: calibrate on the bench's own inputs (random
    # token ids), batch 1, at lengths 8 to 128.
    inputs = [feeds_for(task, model.config, 1, seq) for seq in (8, 16, 32, 64, 128)
              if seq <= model.config.max_position_embeddings]
    digest = hashlib.sha256(b"".join(v.tobytes() for f in inputs for v in f.values())).hexdigest()
    calibration = TextSet(inputs, "bench: random token ids (export.example_inputs)", digest)
    try:
        return quantize_artifact(fp32, folder, QuantizeOptions(recipe=recipe), overwrite=True, judge=False,
                                 feeds=calibration, log=export_log)
    except SbexportError as e:
        raise ExportError(f"bench stopped: quantizing the {LABELS[model.arch]} export for {runtime} failed "
                          f"(nothing was timed): {e}") from None


def _reusable(folder: Path, verify: bool, log: Callable[[str], None], export_log: Callable[[str], None]) -> bool:
    """Whether the cached artifact opens (sha256 of every file); verified now when asked and
    it was not verified at export. Raises ParityError when that verification fails."""
    from ..artifact import open_artifact
    from ..verify import verify_folder

    try:
        manifest = open_artifact(folder)
    except SbexportError as e:
        log(f"re-exporting: cached {e}")
        return False
    if verify and not (manifest.parity and manifest.parity.passed):
        verify_folder(folder, log=export_log).raise_on_failure()
    return True


# The start of an exporter's, quantizer's or verifier's line that `quiet` lets through.
SHOWN_WHEN_QUIET = ("warning", "error", "FAIL")


def quiet(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` for the exporter's lines without --verbose: its warnings, errors and failed
    parity lines only. Its notes are about the export command ("--random-init", "predict needs
    a tokenizer") and its parity tables are pages inside a progress bar; bench says itself
    what it exported and whether each was verified (the report's artifacts and method)."""
    return lambda line: log(line) if line.lstrip().startswith(SHOWN_WHEN_QUIET) else None


def code_fingerprint() -> str:
    """sha256 of the package's source outside bench/: a change to the model or an exporter
    makes the cached exports stale."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "bench" not in path.relative_to(root).parts:
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def artifact_info(folder: Path) -> dict:
    """The report's facts about one exported folder: file, size, export time, parity."""
    from ..artifact import read_manifest

    m = read_manifest(folder)
    parity = m.parity
    facts = {"folder": str(folder), "model_file": m.model_file, "bytes": m.files[m.model_file].bytes,
             "export_seconds": m.export_seconds, "verified": parity is not None,
             "parity_passed": parity.passed if parity else None,
             "parity_max_abs": max(o.max_abs for o in parity.outputs.values()) if parity else None}
    if m.quantization is not None:     # int8: judged by agreement with fp32 PyTorch, not by parity
        agreement = m.agreement
        facts["int8"] = {"recipe": m.quantization.recipe.mode,
                         "agreement": agreement.agreement if agreement else None,
                         "guard_passed": agreement.passed if agreement else None}
    return facts
