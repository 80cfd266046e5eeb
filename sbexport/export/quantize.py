"""int8 ONNX artifacts: quantize an exported fp32 artifact with ONNX Runtime, calibrated on real
text, and keep it only when it still agrees with the fp32 PyTorch model (agreement.py).

    quantize_artifact(src_dir, out_dir, options) -> Path

reads an fp32 ONNX artifact (never changing it), quantizes its model file with `options.recipe`,
writes a new artifact folder (staged, renamed into place only after the accuracy guard passed)
whose manifest records the recipe, the calibration set's sha256 and the guard's figures.

The default recipe is the one measured fastest for SqueezeBERT (issue 11, Intel kind, seq 128,
2 threads): static, QOperator form, per-channel s8 weights, u8 activations, on the Conv nodes
only: 30.1 ms against fp32's 39.0 ms. Quantizing every op in QDQ form ran 65 ms and dynamic
quantization 159 ms (ConvInteger plus float rescaling around every convolution); the attention
MatMuls, LayerNorms, GELU and the embedding tables stay fp32. On x86 CPUs without VNNI, ONNX
Runtime's u8 x s8 kernel saturates: the guard then judges the exact answers through a u8 copy
(exact_int8_file), and `--int8-weights u8` writes such a file (manifest.Recipe.weight_storage).
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import ExportError, SbexportError
from ..manifest import CalibrationSet, Manifest, OnnxGraph, Quantization, Recipe
from ..tasks import Task

BUILTIN_CALIBRATION = "calibration_en.tsv"   # sbexport/data: 70 lines, 140 sentences, tab-separated pairs
# Fewer examples than this and the activation ranges MinMax sees are a thin sample: warn, with the count.
MIN_CALIBRATION = 32
QUANTIZED_CONV_OPS = {"static": "QLinearConv", "dynamic": "ConvInteger"}


# static: the measured fastest form (module docstring). dynamic: ONNX Runtime's one-line recipe,
# per-channel weights on every op it covers; best for BERT-base's MatMuls (43.2 ms against
# 92.7 ms fp32), slowest for SqueezeBERT.
RECIPES = {"static": Recipe(), "dynamic": Recipe(mode="dynamic", op_types=None, equalize=False)}


@dataclass(frozen=True)
class QuantizeOptions:
    """What a user chooses about quantization: the recipe, the calibration texts and the guard."""

    recipe: Recipe = field(default_factory=Recipe)
    calibration: str | None = None     # a text file (one text per line, pairs tab-separated); None: built in
    min_agreement: float = 0.99        # the guard's bar: agreement with fp32 PyTorch, 0..1
    eval_data: str | None = None       # a labelled file for `sbexport eval`'s metric, optional
    max_metric_drop: float = 0.01      # the largest drop of a metric allowed with eval_data (1 point)

    def check(self) -> None:
        """Raise SbexportError for options that cannot work (checked before any work)."""
        if self.recipe.mode not in QUANTIZED_CONV_OPS:
            raise SbexportError(f"unknown quantization mode {self.recipe.mode!r}; expected static or dynamic")
        if self.recipe.weight_storage not in ("s8", "u8"):
            raise SbexportError(f"unknown int8 weight storage {self.recipe.weight_storage!r}; expected s8 or u8")
        if self.recipe.weight_storage == "u8" and self.recipe.mode != "static":
            raise SbexportError("--int8-weights u8 applies to the static recipe's QLinearConv weights only")
        if not 0.0 < self.min_agreement <= 1.0:
            raise SbexportError(f"--min-agreement {self.min_agreement} is outside (0, 1]; e.g. 0.99 for 99%")
        if self.max_metric_drop < 0:
            raise SbexportError(f"--max-metric-drop {self.max_metric_drop} is negative")


# ---------------------------------------------------------------------------------------------
# calibration texts and their encoding
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextSet:
    """Texts for calibration or for the guard: (first, second or None) per line (or, given to
    quantize_artifact as `feeds`, model inputs already encoded)."""

    records: list
    source: str      # the file's path, or "built-in:<name>"
    sha256: str      # of the file's bytes


def read_texts(path: str | Path | None, builtin: str = BUILTIN_CALIBRATION) -> TextSet:
    """The texts of `path` (UTF-8, one text per line, a pair as two tab-separated texts; blank
    lines skipped), or of the built-in file `builtin` (sbexport/data) when `path` is None.
    Raises SbexportError for a missing, unreadable, non-UTF-8 or empty file."""
    if path is None:
        data = resources.files("sbexport.data").joinpath(builtin).read_bytes()
        source = f"built-in:{builtin}"
    else:
        path = Path(path)
        if not path.is_file():
            raise SbexportError(f"{path}: calibration file not found (or not a regular file)")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SbexportError(f"{path}: cannot read the calibration file: {e.strerror or e}") from None
        source = str(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SbexportError(f"{source}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    records = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("\t")]
        if parts[0]:
            records.append((parts[0], parts[1] if len(parts) > 1 and parts[1] else None))
    if not records:
        raise SbexportError(f"{source}: no text in the calibration file (one text per line, pairs tab-separated)")
    return TextSet(records, source, hashlib.sha256(data).hexdigest())


def check_guard_files(options: QuantizeOptions, task: Task) -> None:
    """Read the calibration texts (static recipes) and the --eval-data file for `task` now, so
    that a missing or malformed one fails in a second, before minutes of export and
    quantization. Raises SbexportError as read_texts and eval's read_dataset do."""
    if options.recipe.mode == "static":
        read_texts(options.calibration)
    if options.eval_data is not None:
        from ..eval import read_dataset

        read_dataset(options.eval_data, task)


def encode_texts(task: Task, tokenizer, records: list[tuple[str, str | None]],
                 max_seq: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield one example's model inputs per dict (int64 [1, seq]; [1, choices, seq] for
    multiple choice), for `records` shaped as `task` takes them, encoded by the task's head
    (heads.Head.encode), truncated to `max_seq`.

    One text per example for a one-text task (both texts of a pair line, separately); the pair
    for a pair task (a line without a second text stays a single text); question and context
    for question answering (only the context truncated); for multiple choice, a line's first
    text with the second texts of it and the next choices-1 lines as its endings (padded to
    the longest ending).
    """
    for texts in _examples(task, records):
        yield task.head.encode(tokenizer, [texts], max_seq).feeds


def _examples(task: Task, records) -> list:
    """The heads.Texts of each example, see encode_texts; multiple choice: (first, k endings)."""
    if task.head.choices:
        k, endings = task.num_choices, [s or f for f, s in records]
        return [(f, [endings[(i + j) % len(records)] for j in range(k)]) for i, (f, _) in enumerate(records)]
    if task.pair:
        return list(records)
    return [(text, None) for f, s in records for text in (f, s) if text]


# ---------------------------------------------------------------------------------------------
# the quantization itself
# ---------------------------------------------------------------------------------------------

def _reader(feeds: list[dict[str, np.ndarray]]):
    """A CalibrationDataReader over `feeds` (ONNX Runtime pulls them one at a time)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(feeds)

    return Reader()


def quantize_onnx(src: Path, dst: Path, recipe: Recipe, feeds: list[dict[str, np.ndarray]] | None) -> None:
    """Write `src` quantized with `recipe` to `dst`; static recipes calibrate on `feeds` (one
    unpadded example per dict, so that padded positions do not widen the ranges), after
    equalizing the convolutions' channels when the recipe says so. Raises ExportError when
    ONNX Runtime fails."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from .equalize import conv_ranges, equalize

    model = onnx.load(str(src))
    if recipe.mode == "static" and recipe.equalize:
        equalize(model, conv_ranges(model, feeds))

    common = dict(per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                  weight_type=QuantType[recipe.weight_type],
                  op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if recipe.mode == "dynamic":
                quantize_dynamic(model, dst, **common)
            else:
                quantize_static(model, dst, _reader(feeds), quant_format=QuantFormat[recipe.quant_format],
                                activation_type=QuantType[recipe.activation_type],
                                calibrate_method=CalibrationMethod[recipe.calibrate_method],
                                extra_options={"CalibTensorRangeSymmetric": False}, **common,
                                calibration_cache_path=None, use_external_data_format=False)
        except Exception as e:  # onnxruntime.quantization raises untyped errors
            raise ExportError(f"ONNX Runtime could not quantize {src.name}: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}") from e
    if recipe.weight_storage == "u8":
        model = onnx.load(str(dst))
        store_unsigned(model)
        onnx.save(model, str(dst))


# ---------------------------------------------------------------------------------------------
# s8 weights on CPUs whose ONNX Runtime kernel saturates them (manifest.Recipe.weight_storage)
# ---------------------------------------------------------------------------------------------

def store_unsigned(model) -> int:
    """Store the s8 weights of every QLinearConv of `model` (an onnx.ModelProto, changed in
    place) as u8: w + 128 with zero point 128, the same numbers, which ONNX Runtime runs with
    its u8 x u8 kernel, exact on every CPU. Returns how many convolutions changed (those whose
    weights are s8 with zero points 0, as ONNX Runtime's per-channel quantizer writes them)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        # QLinearConv inputs: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias
        if node.op_type != "QLinearConv" or node.input[3] not in inits or node.input[5] not in inits:
            continue
        weight, zero = (numpy_helper.to_array(inits[name]) for name in (node.input[3], node.input[5]))
        if weight.dtype != np.int8 or zero.any():
            continue
        inits[node.input[3]].CopyFrom(numpy_helper.from_array((weight.astype(np.int16) + 128).astype(np.uint8),
                                                              node.input[3]))
        inits[node.input[5]].CopyFrom(numpy_helper.from_array(np.full(zero.shape, 128, np.uint8), node.input[5]))
        changed += 1
    return changed


def saturates_u8s8(cpuinfo: str | None = None) -> bool:
    """Whether ONNX Runtime's u8 x s8 kernel saturates on this CPU: x86 without VNNI (neither
    avx512_vnni nor avx_vnni among /proc/cpuinfo's flags, or `cpuinfo`'s when given). arm64's
    int8 kernels are exact. A CPU whose flags cannot be read counts as saturating."""
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
            return False
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return not {"avx512_vnni", "avx_vnni"} & set(flags)


def saturation_note(manifest: Manifest) -> str | None:
    """What to tell a user who runs the artifact of `manifest` here (predict, eval) when it is a
    static int8 ONNX file with s8 weights and this CPU saturates them (saturates_u8s8): its
    answers here are not the ones it gives on arm64 and VNNI CPUs. None otherwise."""
    q = manifest.quantization
    if manifest.format != "onnx" or q is None or q.recipe.mode != "static" or q.recipe.weight_storage != "s8":
        return None
    if not saturates_u8s8():
        return None
    return ("this CPU has no VNNI, and ONNX Runtime's u8 x s8 kernel saturates on it: this int8 file's "
            "answers here can differ from those it gives on arm64 and VNNI CPUs (`sbexport verify` judges "
            "those). To run it on CPUs like this one, quantize with --int8-weights u8")


@contextmanager
def exact_int8_file(model_file: Path, log: Callable[[str], None] = print) -> Iterator[Path]:
    """The file to run for the int8 answers the artifact is meant to give: `model_file` itself,
    or, for an .onnx file with s8 QLinearConv weights on a CPU whose ONNX Runtime saturates
    u8 x s8 (saturates_u8s8), a temporary copy with them stored as u8 (store_unsigned: the same
    numbers, computed exactly), saying so in `log`. The copy is gone after the block: load it
    inside (an ONNX Runtime session holds the model in memory)."""
    import onnx

    twin = model_file.suffix == ".onnx" and saturates_u8s8()
    model = onnx.load(str(model_file)) if twin else None
    if model is None or not store_unsigned(model):
        yield model_file
        return
    log("note: this CPU has no VNNI, and ONNX Runtime's u8 x s8 kernel saturates on it; judging the "
        "exact int8 answers (those of arm64 and VNNI CPUs) through a copy with u8 weights. To run "
        "this model on CPUs like this one, quantize with --int8-weights u8")
    with tempfile.TemporaryDirectory(prefix="sbexport-u8-") as scratch:
        copy = Path(scratch) / model_file.name
        onnx.save(model, str(copy))
        yield copy


def quantized_convs(model) -> Counter:
    """Op counts of the convolution nodes of an ONNX model: Conv (fp32), QLinearConv, ConvInteger."""
    return Counter(n.op_type for n in model.graph.node if n.op_type in ("Conv", "QLinearConv", "ConvInteger"))


def check_quantized_graph(model, expected: int, recipe: Recipe) -> OnnxGraph:
    """Raise ExportError unless every one of the `expected` convolutions of `model` became the
    recipe's int8 kernel (QLinearConv for static, ConvInteger for dynamic) and none stayed fp32.
    Returns the manifest's graph summary: op counts, and the groups of the int8 convolutions."""
    import onnx

    wanted = QUANTIZED_CONV_OPS[recipe.mode]
    convs = quantized_convs(model)
    if convs[wanted] != expected or convs["Conv"]:
        raise ExportError(f"the quantized graph has {convs[wanted]} {wanted} and {convs['Conv']} fp32 Conv nodes "
                          f"where the model has {expected} projections: not every convolution was quantized")
    groups = Counter(str(next((onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1))
                     for n in model.graph.node if n.op_type == wanted)
    return OnnxGraph(ops=dict(Counter(n.op_type for n in model.graph.node).most_common()), conv_groups=dict(groups))


# ---------------------------------------------------------------------------------------------
# artifact to artifact
# ---------------------------------------------------------------------------------------------

def quantize_artifact(src_dir: str | Path, out_dir: str | Path, options: QuantizeOptions = QuantizeOptions(), *,
                      overwrite: bool = False, reference=None, judge: bool = True,
                      feeds: TextSet | None = None, log: Callable[[str], None] = print) -> Path:
    """Quantize the fp32 ONNX artifact at `src_dir` into a new artifact folder `out_dir`.

    `reference` is the fp32 PyTorch model (rebuilt from the source's manifest when None). The
    new folder is staged and renamed into place only when its graph check and the accuracy
    guard pass (with `judge` False, the bench's timing of random weights, the guard's figures
    are recorded and do not stop it; `feeds`, a TextSet whose records are model inputs, then
    replaces the calibration texts, for a random-init artifact has no tokenizer); `src_dir` is
    never changed. Returns `out_dir`. Raises
    SbexportError (an artifact that is not fp32 ONNX, bad calibration text, a destination that
    may not be replaced), ExportError (quantization failed) or ParityError (the guard refused it).
    """
    from ..agreement import guard_folder
    from ..artifact import check_destination, check_outside, open_artifact, output_folder, staged_folder, write_manifest
    from ..modeling import conv_projections
    from ..tasks import get_task
    from ..verify import rebuild_reference

    src_dir, out_dir = Path(src_dir), output_folder(out_dir)
    options.check()
    manifest = open_artifact(src_dir)
    _check_source(src_dir, manifest, options.recipe)
    check_outside(src_dir, out_dir, "fp32 artifact")
    check_destination(out_dir, overwrite)
    task = get_task(manifest.task)
    check_guard_files(options, task)
    texts, examples = None, None          # static only: the calibration set, and its model inputs
    if options.recipe.mode == "static":
        texts = feeds if feeds is not None else read_texts(options.calibration)
    if reference is None:
        reference = rebuild_reference(src_dir, manifest, task)
    if texts is not None:
        examples = list(feeds.records) if feeds is not None else \
            _calibration_feeds(task, _tokenizer(src_dir), texts, manifest, log)
    with staged_folder(out_dir, overwrite, log=log) as tmp:
        model_file = manifest.model_file
        for name in manifest.files:
            if name != model_file:
                shutil.copy2(src_dir / name, tmp / name)
        log(f"quantizing {model_file} ({options.recipe.mode} int8"
            f"{f', calibrated on {len(examples)} examples' if examples else ''})...")
        quantize_onnx(src_dir / model_file, tmp / model_file, options.recipe, examples)
        graph = check_quantized_graph(_load(tmp / model_file), conv_projections(reference.config), options.recipe)
        write_manifest(tmp, int8_manifest(manifest, options, texts, graph, len(examples or ())))
        report = guard_folder(tmp, reference, options, log=log, shown_as=out_dir)
        if judge:
            report.raise_on_failure()   # inside the staged folder: a refused file never lands
    log(f"wrote {out_dir}")
    return out_dir


def _check_source(folder: Path, manifest: Manifest, recipe: Recipe) -> None:
    """Raise SbexportError unless `folder` holds an fp32 ONNX artifact that `recipe` can
    quantize (the static recipe needs convolutions: BERT-base has none)."""
    if manifest.quantization is not None:
        raise SbexportError(f"{folder} is already quantized ({manifest.quantization.recipe.mode} int8); "
                            f"quantize its fp32 artifact instead")
    if manifest.format != "onnx":
        raise SbexportError(f"{folder} is an {manifest.format} artifact; `sbexport quantize` takes an fp32 "
                            f"ONNX artifact (sbexport onnx)")
    if recipe.mode == "static" and not manifest.details.graph.conv_groups:
        raise SbexportError(f"{folder} is a {manifest.arch} model without convolutions: the static recipe "
                            f"quantizes convolutions only; use --quantize-mode dynamic")


def _tokenizer(folder: Path):
    from ..tokenizer import SqueezeBertTokenizer, has_tokenizer

    if not has_tokenizer(folder):
        raise SbexportError(f"{folder}: the artifact has no tokenizer, so calibration text cannot be encoded; "
                            f"export it from a checkpoint that has one")
    return SqueezeBertTokenizer.from_pretrained(folder)


def _calibration_feeds(task: Task, tokenizer, texts: TextSet, manifest: Manifest, log) -> list[dict]:
    """One unpadded input dict per calibration example (batch 1: a fixed-batch file's batch is
    irrelevant here, calibration runs the fp32 ONNX file with a dynamic batch)."""
    feeds = list(encode_texts(task, tokenizer, texts.records, manifest.dims.sequence[1]))
    if len(feeds) < MIN_CALIBRATION:
        log(f"warning: {texts.source} gives {len(feeds)} calibration examples, fewer than the "
            f"{MIN_CALIBRATION} recommended; quantizing with the {len(feeds)} there are")
    return feeds


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def int8_manifest(fp32: Manifest, options: QuantizeOptions, texts: TextSet | None, graph: OnnxGraph,
                  examples: int) -> Manifest:
    """The int8 artifact's manifest: the fp32 artifact's (task, labels, axes, source), with the
    description, the graph of the int8 file and a `quantization` record (recipe, calibration set
    and its sha256, the guard's bars, the fp32 parity figures) in place of the fp32 `parity`.
    The guard adds its figures (`agreement`) when it has run."""
    calibration = None if texts is None else CalibrationSet(source=texts.source, sha256=texts.sha256,
                                                            lines=len(texts.records), examples=examples)
    quantization = Quantization(recipe=options.recipe, calibration=calibration, min_agreement=options.min_agreement,
                                max_metric_drop=options.max_metric_drop, fp32_parity=fp32.parity)
    return replace(fp32, description=f"ONNX model for ONNX Runtime (int8, {options.recipe.mode})",
                   details=replace(fp32.details, graph=graph), parity=None, agreement=None,
                   quantization=quantization)


def export_int8(fmt: str, task: Task, source, out_dir: str | Path, options, quantize: QuantizeOptions, *,
                max_seq_len: int | None = None, overwrite: bool = False, verify: bool = True, config=None,
                log: Callable[[str], None] = print) -> Path:
    """`sbexport onnx|executorch --quantize int8`: export the fp32 artifact of format `fmt`
    (`options`: its export.OnnxOptions or ExecuTorchOptions; `max_seq_len`, `config` as
    export_artifact takes them) into a temporary folder (its parity checked unless not
    `verify`), then quantize it into `out_dir` (quantize_artifact, or for ExecuTorch
    quantize_executorch.quantize_pte_artifact); the fp32 folder is removed either way. Bad
    options, calibration text or destination fail before the export. Returns `out_dir`; raises
    as export_artifact and the quantizer do."""
    from ..artifact import check_destination, output_folder
    from . import export_artifact

    quantize_folder = quantize_artifact
    if fmt == "executorch":
        from .quantize_executorch import check_int8_export, quantize_pte_artifact

        quantize, quantize_folder = check_int8_export(options, quantize), quantize_pte_artifact
    out_dir = output_folder(out_dir)
    quantize.check()
    check_destination(out_dir, overwrite)
    check_guard_files(quantize, task)             # a bad file fails now, not after the export
    with tempfile.TemporaryDirectory(prefix="sbexport-fp32-") as scratch:
        def fp32_log(line: str) -> None:   # the fp32 folder is scratch: do not announce it as written
            log("fp32 export done; quantizing it" if line.startswith("wrote ") else line)
        fp32 = export_artifact(fmt, task, source, Path(scratch) / "fp32", options, max_seq_len=max_seq_len,
                               verify=verify, config=config, log=fp32_log)
        return quantize_folder(fp32, out_dir, quantize, overwrite=overwrite, log=log)
