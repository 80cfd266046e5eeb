"""One export interface for every format.

    export_artifact(fmt, task, source, out_dir, options) -> Path

builds the reference model once, wraps it so that it takes the task's inputs positionally and
returns its outputs as a tuple, and hands the wrapper, example inputs and dynamic dimensions
to the format's exporter, which writes one model file and returns what the manifest should
record about it. The folder (model file, config.json, tokenizer, manifest.json) is staged and
renamed into place; verify runs before the rename, so a file that fails parity never lands.

A format is a module with FILE_NAME, DESCRIPTION,
    check_options(options) -> None      (raises SbexportError; runs before any work)
    export(wrapper, example, dims, path, options) -> dict
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..artifact import check_destination, output_folder, staged_folder, write_manifest
from ..errors import ExportError, SbexportError
from ..heads import INPUT_NAMES
from ..source import ModelSource, build_reference, load_tokenizer
from ..tasks import Task
from . import executorch as executorch_format
from . import onnx as onnx_format

FORMATS = {"onnx": onnx_format, "executorch": executorch_format}


@dataclass(frozen=True)
class ExportOptions:
    """What a user can choose about an export. Unused fields are ignored by a format."""

    opset: int = 18                   # ONNX opset
    max_seq_len: int | None = None    # upper bound of the dynamic sequence; default max_position_embeddings
    backend: str = "xnnpack"          # ExecuTorch: "xnnpack" or "portable"
    batch: int = 1                    # ExecuTorch: fixed batch (XNNPACK reshapes allow one dynamic dim)
    max_batch: int = 1024             # ONNX: upper bound of the dynamic batch


class ExportWrapper(nn.Module):
    """The model with the task's inputs as positional int64 tensors and its outputs as a tuple.

    input_ids, attention_mask, token_type_ids: [batch, sequence] ([batch, choices, sequence]
    for multiple choice) -> the task's outputs in `task.outputs` order.
    """

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model = model
        self.output_names = task.outputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(getattr(out, name) for name in self.output_names)


def example_inputs(task: Task, config, batch: int = 2, seq_len: int = 8) -> dict[str, torch.Tensor]:
    """Random int64 inputs of the task's shape; the last row is padded to show the mask's use."""
    shape = task.input_shape(batch, seq_len)
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, config.vocab_size, shape, generator=gen)
    attention_mask = torch.ones(shape, dtype=torch.long)
    attention_mask[-1, ..., seq_len // 2:] = 0
    token_type_ids = torch.zeros(shape, dtype=torch.long)
    token_type_ids[..., seq_len // 2:] = 1
    return dict(zip(INPUT_NAMES, (input_ids, attention_mask, token_type_ids)))


def max_sequence(config, options: ExportOptions) -> int:
    """The upper bound of the exported sequence dimension; raises SbexportError outside
    2..max_position_embeddings (a dynamic dimension needs a range: 1..1 cannot be one)."""
    limit = config.max_position_embeddings
    if options.max_seq_len is None:
        return limit
    if not 2 <= options.max_seq_len <= limit:
        raise SbexportError(f"--max-seq-len {options.max_seq_len} is outside 2..{limit} "
                            f"(the model's max_position_embeddings)")
    return options.max_seq_len


def export_artifact(fmt: str, task: Task, source: ModelSource, out_dir: str | Path,
                    options: ExportOptions = ExportOptions(), *, overwrite: bool = False,
                    verify: bool = True, config=None,
                    log: Callable[[str], None] = print) -> Path:
    """Export `task` from `source` to format `fmt` in the folder `out_dir`.

    `config`, when given, is the exact model config to build instead of the source's (see
    source.build_reference), e.g. random_init_config(task, arch, a custom size).

    Returns the folder. Raises SbexportError (bad options, an empty `out_dir`, an existing
    folder that may not be replaced (see artifact.check_destination), missing checkpoint),
    ExportError (the exporter failed) or ParityError (verify failed); in every failure `out_dir`
    is left as it was, and parent folders this call created are removed again.
    """
    if fmt not in FORMATS:
        raise SbexportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    exporter, out_dir = FORMATS[fmt], output_folder(out_dir)
    # Cheap checks first: fail in a second, not after minutes of work.
    check_destination(out_dir, overwrite)
    exporter.check_options(options)
    if source.random_init:
        log(f"note: --random-init: exporting the {source.arch} architecture with RANDOM weights "
            f"(seed {source.seed}); its outputs mean nothing, its size and speed are real")
    model = build_reference(task, source, config)
    max_seq = max_sequence(model.config, options)
    tokenizer = bundled_tokenizer(source, model.config, log)
    wrapper = ExportWrapper(model, task).eval()
    example = example_inputs(task, model.config, batch=options.batch if fmt == "executorch" else 2,
                             seq_len=min(8, max_seq))
    with staged_folder(out_dir, overwrite, log=log) as tmp:
        log(f"exporting {task.name} ({type(model).__name__}) to {fmt}...")
        started = time.perf_counter()
        try:
            details = exporter.export(wrapper, example, max_seq, tmp / exporter.FILE_NAME, options)
        except SbexportError:
            raise
        except Exception as e:
            if _interrupted(e):   # Ctrl-C inside torch.export, which wraps it: abort like every other phase
                raise KeyboardInterrupt from e
            raise ExportError(f"{fmt} export of {task.name} failed: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:400] if str(e).strip() else ''}") from e
        seconds = time.perf_counter() - started
        log(f"exported {exporter.FILE_NAME} in {seconds:.1f} s")
        _write_side_files(tmp, model, tokenizer)
        write_manifest(tmp, _manifest(fmt, task, source, model, options, exporter, details, max_seq, seconds))
        if verify:
            from ..verify import verify_folder
            report = verify_folder(tmp, reference=model, log=log, shown_as=out_dir)
            report.raise_on_failure()   # inside the staged folder: a failing file never lands
    log(f"wrote {out_dir}")
    return out_dir


def _interrupted(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt is anywhere in `error`'s chain (causes and contexts):
    torch.export and torch.onnx catch what tracing raises and re-raise their own errors."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def bundled_tokenizer(source: ModelSource, config, log: Callable[[str], None]):
    """The tokenizer the artifact will hold, read before the export so that a bad one fails in
    seconds rather than after it; or None, with a note, when there is none to hold.

    A checkpoint whose vocabulary has more tokens than its embedding table has rows is refused:
    its tokenizer would give ids the model cannot embed, so predict and eval would fail on the
    artifact. Random weights (whose config the caller chose, such as the tests' tiny ones) are
    exported without the tokenizer instead. Raises SbexportError (unreadable or corrupt
    tokenizer files, the mismatch above).
    """
    tokenizer = load_tokenizer(source)
    if tokenizer is None:
        why = (f"{source.resolved_path} has no tokenizer.json or vocab.txt" if source.resolved_path
               else "the bert-base-uncased vocabulary (the test extra) is not installed")
        log(f"note: {why}: the artifact will have no tokenizer, and predict needs one")
        return None
    if tokenizer.vocab_size <= config.vocab_size:
        return tokenizer
    mismatch = (f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding table has "
                f"{config.vocab_size} rows (vocab_size)")
    if not source.random_init:
        raise SbexportError(f"{source.resolved_path}: {mismatch}: ids {config.vocab_size} and up could not be "
                            f"embedded; give the checkpoint the vocabulary it was trained with")
    log(f"note: {mismatch}: the artifact is exported without a tokenizer, and predict needs one")
    return None


def _write_side_files(folder: Path, model: nn.Module, tokenizer) -> None:
    """config.json for the runtime's shape facts, and the tokenizer (when there is one) so that
    an app can encode. Raises SbexportError when they cannot be written (a full disk)."""
    try:
        model.config.to_json_file(folder / "config.json")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
    except OSError as e:
        raise SbexportError(f"cannot write {e.filename or folder}: {e.strerror or e}") from None


def _manifest(fmt, task, source, model, options, exporter, details, max_seq, seconds) -> dict:
    config = model.config
    dims = {"sequence": [1, max_seq]}
    return {
        "sbexport_version": __version__,
        "format": fmt,
        "description": exporter.DESCRIPTION,
        "model_file": exporter.FILE_NAME,
        "task": task.name,
        "head": task.head.name,
        "arch": source.arch,
        "model_class": type(model).__name__,
        "labels": [config.id2label[i] for i in range(config.num_labels)]
        if task.head.has_labels else [],
        "inputs": {name: {"dtype": "int64", "axes": list(task.input_axes)} for name in INPUT_NAMES},
        "outputs": {name: {"dtype": "float32", "axes": list(task.output_axes(name))} for name in task.outputs},
        "dims": {**dims, **details.pop("dims", {})},
        "num_choices": task.num_choices or None,
        "source": source.to_dict(),
        "options": asdict(options),
        "torch_version": torch.__version__,
        "export_seconds": round(seconds, 2),
        **details,
    }
