"""int8 ExecuTorch artifacts: PT2E static quantization of every projection with XNNPACK's
quantizer, calibrated on the texts ONNX int8 calibrates on (quantize.py), lowered to XNNPACK,
and kept only when it still agrees with the fp32 PyTorch model (agreement.py).

    quantize_pte_artifact(src_dir, out_dir, options) -> Path

reads an fp32 XNNPACK artifact (never changing it), rebuilds its PyTorch reference and quantizes
it in stages: equalize the convolutions' channels (equalize.equalize_module, as the ONNX recipe
does), torch.export, prepare_pt2e with the XNNPACKQuantizer on the conv1d nodes only (static:
int8 per-tensor activations, int8 per-channel symmetric weights, MinMax observers), calibrate,
convert_pt2e, then the exporter's XNNPACK lowering. The new folder lands only when every
projection runs inside the delegate as a quantized convolution (checked on the lowered graph)
and the accuracy guard passes; its manifest records the recipe, the calibration set's sha256
and the guard's figures, like an int8 ONNX artifact's.

Static quantization keeps the grouped conv1d in the delegate as it is: XNNPACK's
Conv1dUnsqueezePass makes each a Conv2d over [batch, channels, 1, seq] with qint8 input and
output and qcint8 (per-channel) weights (tests/test_quantize_executorch.py reads them back from
the .pte). Dynamic quantization would not: the partitioner takes dynamically quantized
convolutions only in standard 2-D form. The embedding tables, LayerNorms, attention matmuls,
GELU and the heads' Linear layers stay fp32, as in the ONNX recipe. The program keeps the
[B, C, S] form, not the fp32 program's [B, C, 1, S] layout with the LayerNorms in the delegate
(layout.py): quantized in that layout it took 1.023x the time at one thread and 0.996x at two,
because the LayerNorms' one-output GEMMs cost what the boundaries they remove did, and the int8
convolutions' transposes stay (benchmarks/NOTES.md, stop 20).

Measured on the MiniLM checkpoint (convert-bert), features, guard sentences, PT2E fake-quant
graph: without equalization 0% of token embeddings at cosine >= 0.99 (mean 0.937 with the
quantizer's default HistogramObserver, 0.929 with MinMax); with it 99.5% (Histogram) and 99.6%
(MinMax, min 0.982), so MinMax, as ONNX calibrates.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import ExportError, SbexportError
from ..heads import INPUT_NAMES
from ..manifest import ExecuTorchGraph, Manifest, Recipe
from . import executorch as executorch_format
from .quantize import QuantizeOptions, _calibration_feeds, _tokenizer, check_guard_files, int8_manifest, read_texts

# What the manifest records: static PT2E on the conv1d nodes, int8 activations (XNNPACK's qs8
# kernels take signed activations, unlike ONNX Runtime's u8), per-channel symmetric int8 weights.
RECIPE = Recipe(mode="static", quant_format="PT2E", op_types=("conv1d",), per_channel=True,
                activation_type="QInt8", weight_type="QInt8", reduce_range=False, calibrate_method="MinMax",
                equalize=True)
DESCRIPTION = "ExecuTorch program (int8, static PT2E, XNNPACK)"


def quantizer():
    """XNNPACK's quantizer annotating the conv1d nodes only (see RECIPE)."""
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.observer import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True)   # int8 activations, per-channel weights
    activation = dataclasses.replace(config.input_activation,
                                     observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
    config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    return XNNPACKQuantizer().set_operator_type(torch.ops.aten.conv1d.default, config)


def quantize_module(wrapper: torch.nn.Module, example: dict, max_seq: int, feeds: list[dict[str, np.ndarray]],
                    recipe: Recipe = RECIPE) -> torch.fx.GraphModule:
    """The PT2E-quantized graph of `wrapper` (export.ExportWrapper, not changed: a copy is
    equalized and traced), calibrated on `feeds` (input dicts of batch 1, repeated to the
    example's batch: a program's batch is fixed). Its convolutions are native aten convs
    between quantize/dequantize nodes."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = next(iter(example.values())).shape[0]
    feeds = [{k: np.repeat(v, batch, axis=0) for k, v in f.items()} for f in feeds]
    model = copy.deepcopy(wrapper)
    if recipe.equalize:
        from .equalize import equalize_module
        equalize_module(model, feeds)
    program = torch.export.export(model, tuple(example.values()),
                                  dynamic_shapes=executorch_format._dynamic_shapes(example, max_seq))
    prepared = prepare_pt2e(program.module(), quantizer())
    with torch.no_grad():
        for f in feeds:
            prepared(*(torch.from_numpy(f[name]) for name in INPUT_NAMES))
    return convert_pt2e(prepared)


def quantized_convolutions(graph_module) -> int:
    """How many convolutions inside the delegates of a lowered program read a dequantized int8
    input and dequantized per-channel int8 weights (the XNNPACK partitioner then runs them as
    a quantized convolution)."""
    count = 0
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and executorch_format._op_name(node.target) == "executorch_call_delegate":
            lowered = getattr(graph_module, node.args[0].target).original_module.graph_module
            count += sum(1 for n in executorch_format._convs(lowered)
                         if _source(n.args[0]) == "dequantize_per_tensor"
                         and _source(n.args[1]) == "dequantize_per_channel")
    return count


def _source(arg) -> str:
    return executorch_format._op_name(arg.target) if getattr(arg, "op", None) == "call_function" else ""


def lower_int8(wrapper, example: dict, max_seq: int, feeds: list, path: Path) -> ExecuTorchGraph:
    """Quantize `wrapper` (quantize_module), lower it to XNNPACK and write the program to
    `path`. Returns the graph summary; raises ExportError when a projection is not a native
    convolution, falls out of the delegate or is not quantized."""
    from ..modeling import conv_projections

    expected = conv_projections(wrapper.model.config)
    quantized = quantize_module(wrapper, example, max_seq, feeds)
    edge = executorch_format.lower(quantized, example, max_seq, "xnnpack")
    summary = executorch_format.checked_summary(edge, expected, "xnnpack")
    int8 = quantized_convolutions(edge.exported_program().graph_module)
    if int8 != expected:
        raise ExportError(f"{expected - int8} of the {expected} convolutions run in fp32 inside the XNNPACK "
                          f"delegate: they were not quantized")
    path.write_bytes(edge.to_executorch().buffer)
    return replace(summary, quantized_convolutions=int8)


# ---------------------------------------------------------------------------------------------
# artifact to artifact
# ---------------------------------------------------------------------------------------------

def quantize_pte_artifact(src_dir: str | Path, out_dir: str | Path, options: QuantizeOptions | None = None, *,
                          overwrite: bool = False, reference=None, log: Callable[[str], None] = print) -> Path:
    """Quantize the fp32 XNNPACK ExecuTorch artifact at `src_dir` into a new artifact folder
    `out_dir` (`options.recipe` is ignored: RECIPE is the one form that keeps every convolution
    quantized in the delegate).

    `reference` is the fp32 PyTorch model (rebuilt from the source's manifest when None). The
    new folder is staged and renamed into place only when its graph check and the accuracy
    guard pass; `src_dir` is never changed. Returns `out_dir`. Raises SbexportError (an
    artifact that is not fp32 XNNPACK ExecuTorch, bad calibration text, a destination that may
    not be replaced), ExportError (quantization or lowering failed) or ParityError (the guard
    refused it).
    """
    from ..agreement import guard_folder
    from ..artifact import check_destination, check_outside, open_artifact, output_folder, staged_folder, write_manifest
    from ..tasks import get_task
    from ..verify import rebuild_reference
    from . import ExportWrapper, example_inputs

    options = replace(options or QuantizeOptions(), recipe=RECIPE)
    src_dir, out_dir = Path(src_dir), output_folder(out_dir)
    options.check()
    manifest = open_artifact(src_dir)
    _check_source(src_dir, manifest)
    check_outside(src_dir, out_dir, "fp32 artifact")
    check_destination(out_dir, overwrite)
    task = get_task(manifest.task)
    check_guard_files(options, task)
    tokenizer = _tokenizer(src_dir)
    texts = read_texts(options.calibration)
    if reference is None:
        reference = rebuild_reference(src_dir, manifest, task)
    feeds = _calibration_feeds(task, tokenizer, texts, manifest, log)
    max_seq = manifest.dims.sequence[1]
    example = example_inputs(task, reference.config, batch=manifest.dims.batch[0], seq_len=min(8, max_seq))
    with staged_folder(out_dir, overwrite, log=log) as tmp:
        for name in manifest.files:
            if name != manifest.model_file:
                shutil.copy2(src_dir / name, tmp / name)
        log(f"quantizing {task.name} to int8 (static PT2E, XNNPACK), calibrated on {len(feeds)} examples...")
        try:
            graph = lower_int8(ExportWrapper(reference, task).eval(), example, max_seq, feeds,
                               tmp / manifest.model_file)
        except SbexportError:
            raise
        except Exception as e:  # torch.export, torchao and executorch raise untyped errors
            raise ExportError(f"int8 ExecuTorch export of {task.name} failed: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}") from e
        write_manifest(tmp, int8_pte_manifest(manifest, options, texts, graph, len(feeds)))
        report = guard_folder(tmp, reference, options, log=log, shown_as=out_dir)
        report.raise_on_failure()   # inside the staged folder: a refused file never lands
    log(f"wrote {out_dir}")
    return out_dir


def _check_source(folder: Path, manifest: Manifest) -> None:
    """Raise SbexportError unless `folder` holds an fp32 XNNPACK ExecuTorch artifact of a model
    with convolutions."""
    if manifest.quantization is not None:
        raise SbexportError(f"{folder} is already quantized ({manifest.quantization.recipe.mode} int8); "
                            f"quantize its fp32 artifact instead")
    if manifest.format != "executorch" or manifest.details.backend != "xnnpack":
        what = "ONNX" if manifest.format != "executorch" else f"ExecuTorch {manifest.details.backend}"
        raise SbexportError(f"{folder} is an {what} artifact; ExecuTorch int8 takes an fp32 XNNPACK ExecuTorch "
                            f"artifact (sbexport executorch)")
    if not manifest.details.graph.convolutions_in_delegate:
        raise SbexportError(f"{folder} is a {manifest.arch} model without convolutions: the ExecuTorch int8 "
                            f"recipe quantizes convolutions only")


def int8_pte_manifest(fp32: Manifest, options: QuantizeOptions, texts, graph: ExecuTorchGraph,
                      examples: int) -> Manifest:
    """The int8 program's manifest: quantize.int8_manifest's (the fp32 artifact's with the int8
    graph and the `quantization` record) with this description."""
    return replace(int8_manifest(fp32, options, texts, graph, examples), description=DESCRIPTION)


def check_int8_export(options, quantize: QuantizeOptions) -> QuantizeOptions:
    """`quantize` with this module's RECIPE (the one form that keeps every convolution quantized
    in the delegate), for an export with export.ExecuTorchOptions `options`; raises
    SbexportError for a backend other than XNNPACK, or grouped convolutions left outside it."""
    if options.backend != "xnnpack":
        raise SbexportError(f"--quantize int8 runs on the XNNPACK backend, not {options.backend!r}")
    if options.grouped_conv != "xnnpack":
        raise SbexportError(f"--quantize int8 puts every convolution in the XNNPACK delegate; "
                            f"--grouped-conv {options.grouped_conv} is for fp32 programs")
    return replace(quantize, recipe=RECIPE)
