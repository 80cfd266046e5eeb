"""ONNX: torch.onnx's dynamo exporter, dynamic batch / choices / sequence, checked with
onnx.checker. Every Conv1d stays one ONNX Conv node with kernel 1 and its group count; the
exact GELU, which the exporter writes as five nodes, becomes one Gelu node (fuse_exact_gelu)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ExportError, SbexportError
from ..manifest import Dims, OnnxDetails, OnnxGraph
from ..modeling import conv_projections

FILE_NAME = "model.onnx"
DESCRIPTION = "ONNX model for ONNX Runtime (fp32)"
MAX_CHOICES = 64


@dataclass(frozen=True)
class Options:
    """What a user can choose about an ONNX export."""

    opset: int = 18
    max_batch: int = 1024             # upper bound of the dynamic batch


def supported_opsets() -> range:
    """The opsets the installed exporter writes: torch.onnx's dynamo path emits opset 18 (its
    torchlib) and onnxscript's version converter moves the graph within its supported range
    (18..25 with onnxscript 0.7.2; opset 26 fails inside the converter, checked)."""
    try:
        from onnxscript.version_converter import _version_converter as converter
        return range(converter.SUPPORTED_MIN_ONNX_OPSET, converter.SUPPORTED_MAX_ONNX_OPSET + 1)
    except (ImportError, AttributeError):   # a future onnxscript: fall back to torch's own bound
        from torch.onnx._constants import ONNX_MAX_OPSET
        return range(18, ONNX_MAX_OPSET + 1)


def example_batch(options: Options) -> int:
    """Two rows, so that the traced batch dimension is not specialised to 1."""
    return 2


def check_options(options: Options) -> None:
    """Raise SbexportError for an opset the installed exporter cannot write."""
    opsets = supported_opsets()
    if options.opset not in opsets:
        raise SbexportError(f"--opset {options.opset} is not supported by the installed exporter "
                            f"(torch {torch.__version__}): choose {opsets.start} to {opsets.stop - 1}")


def export(wrapper, example: dict, max_seq: int, path: Path, options: Options) -> tuple[OnnxDetails, Dims]:
    """Write wrapper as ONNX at `path`; return what the manifest records about it, and the
    ranges it accepts. Raises ExportError when a projection is not a native Conv."""
    import onnx

    dims = _dynamic_shapes(example, max_seq, options.max_batch)
    # verbose=False: no progress prints on stdout. Its warnings (optional torchvision ops, axis
    # renames) are left to the caller: the CLI hides third-party warnings unless --verbose.
    program = torch.onnx.export(wrapper, tuple(example.values()), dynamo=True, verbose=False,
                                opset_version=options.opset, input_names=list(example),
                                output_names=list(wrapper.output_names), dynamic_shapes=dims)
    fuse_exact_gelu(program.model)
    program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    multiple_choice = example["input_ids"].dim() == 3   # [batch, choices, sequence]
    dims = Dims(batch=(1, options.max_batch), sequence=(1, max_seq),
                choices=(1, MAX_CHOICES) if multiple_choice else None)
    details = OnnxDetails(opset=options.opset, onnx_version=onnx.__version__,
                          graph=graph_summary(model, conv_projections(wrapper.model.config)))
    return details, dims


def fuse_exact_gelu(model) -> int:
    """Rewrite each exact GELU of the ir.Model `model` in place, x * 0.5 * (1 + erf(x / sqrt 2))
    as the exporter writes it (Div, Erf, Add, Mul, Mul, in either order of the two Muls), into
    one com.microsoft Gelu node (ONNX Runtime's exact-erf kernel, not the tanh FastGelu);
    returns how many were rewritten. ONNX Runtime's own GeluFusion misses the exporter's
    ordering, and the five element-wise passes over [B, 3072, S] cost about a tenth of the
    model's time (benchmarks/NOTES.md, "GELU as one node").

    Below opset 20 the exporter writes that five-node form; from opset 20, where ONNX defines
    Gelu, it writes one standard ai.onnx Gelu (approximate="none") itself and nothing matches
    here: `--opset 20` is the portable file. Both forms run ONNX Runtime's one exact kernel
    (measured on [1, 3072, 128], one thread: 450 us each, both 2.7e-7 from float64)."""
    from onnxscript import ir
    from onnxscript.rewriter import pattern
    from onnxscript.rewriter.ort_fusions import erfgelu

    rules = pattern.RewriteRuleSet([erfgelu.rule1, erfgelu.rule2], commute=True)
    count = rules.apply_to_model(model)
    ir.passes.common.RemoveUnusedNodesPass()(model)   # the constants 1.0, 0.5 and sqrt 2 of the old form
    return count


def _dynamic_shapes(example: dict, max_seq: int, max_batch: int) -> dict:
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    seq = torch.export.Dim("sequence", min=1, max=max_seq)
    choices = torch.export.Dim("choices", min=1, max=MAX_CHOICES)
    return {name: ({0: batch, 1: choices, 2: seq} if t.dim() == 3 else {0: batch, 1: seq})
            for name, t in example.items()}


def conv_nodes(model) -> list[dict]:
    """Every Conv node: its weight initializer's name, group and kernel shape, in graph order."""
    import onnx

    out = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out.append({"weight": node.input[1], "group": attrs.get("group", 1),
                        "kernel_shape": list(attrs.get("kernel_shape", []))})
    return out


def graph_summary(model, expected: int | None = None) -> OnnxGraph:
    """Op counts and the Conv groups, for the manifest and `sbexport info`. Raises ExportError
    when the graph does not hold `expected` Conv nodes (the projections were not kept)."""
    convs = conv_nodes(model)
    if expected is not None and len(convs) != expected:
        raise ExportError(f"the ONNX graph has {len(convs)} Conv nodes where the model has {expected} "
                          f"grouped projections: they were not kept as native convolutions")
    return OnnxGraph(ops=dict(Counter(n.op_type for n in model.graph.node).most_common()),
                     conv_groups=dict(Counter(str(c["group"]) for c in convs)))
