"""ExecuTorch: torch.export with a dynamic sequence, lowered to XNNPACK (every convolution
inside the delegate, checked here) or left on the portable kernels, saved as a .pte.

Opt-in (Options.grouped_conv "per-group"): each grouped projection exported as one dense
convolution per group (export/layout.py's PerGroupConv2d), all inside the delegate: XNNPACK's
dense path, much faster than its grouped one on AVX2-only x86, a little slower on AVX-512.

Opt-in (Options.grouped_conv "runner-kernel"): the grouped projections (groups > 1) are kept
out of the XNNPACK delegate as native aten convolutions, everything else delegated as usual, so
that the native runner's registered kernel (kernels/executorch/) runs them. The file stays a
plain .pte: a runtime without that kernel (Python's, which verify uses) runs them with its
portable convolution. Exported in the [B, C, S] form (no conv2d_layout): the layout saves the
delegate's transposes around convolutions inside it, and here those convolutions are outside,
where [B, C, S] keeps every tensor they see contiguous (the kernel's registered dim order); with
them outside, XNNPACK's lowering refuses the layout anyway (a delegate output passed through).

The batch is fixed (Options.batch, 1 by default, as on a phone): XNNPACK's reshape
accepts one dynamic dimension, and the attention's head split reshapes [B, C, S] into
[B, heads, head_size, S], which with a dynamic batch would have two.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ExportError
from ..manifest import Dims, ExecuTorchDetails, ExecuTorchGraph
from ..modeling import conv_projections
from .layout import DelegatedLayerNorm, conv2d_layout, share_group_splits

FILE_NAME = "model.pte"
DESCRIPTION = "ExecuTorch program (fp32)"
BACKENDS = ("xnnpack", "portable")
GROUPED_CONV = ("xnnpack", "per-group", "runner-kernel")    # how and where the grouped projections run


@dataclass(frozen=True)
class Options:
    """What a user can choose about an ExecuTorch export."""

    backend: str = "xnnpack"          # "xnnpack" or "portable"
    batch: int = 1                    # the program's fixed batch (see the module docstring)
    grouped_conv: str = "xnnpack"     # or "per-group", "runner-kernel" (opt-ins; see the module docstring)


def example_batch(options: Options) -> int:
    """The fixed batch: the program accepts only the batch it was traced with."""
    return options.batch


def check_options(options: Options) -> None:
    """Raise ExportError for a backend or grouped_conv this exporter does not know, and for an
    opt-in grouped_conv on the portable backend (both are forms for the XNNPACK delegate)."""
    if options.backend not in BACKENDS:
        raise ExportError(f"unknown ExecuTorch backend {options.backend!r}; expected one of {', '.join(BACKENDS)}")
    if options.grouped_conv not in GROUPED_CONV:
        raise ExportError(f"unknown --grouped-conv {options.grouped_conv!r}; expected one of {', '.join(GROUPED_CONV)}")
    if options.grouped_conv != "xnnpack" and options.backend != "xnnpack":
        raise ExportError(f"--grouped-conv {options.grouped_conv} is a form for the XNNPACK delegate; "
                          f"the {options.backend} backend has no delegate (every convolution is native already)")


def export(wrapper, example: dict, max_seq: int, path: Path, options: Options) -> tuple[ExecuTorchDetails, Dims]:
    """Write wrapper as a .pte at `path`; return what the manifest records about it, and the
    ranges it accepts. Raises ExportError when a projection is not a native convolution or
    (XNNPACK) falls out of the delegate."""
    import executorch

    check_options(options)
    runner_kernel = options.grouped_conv == "runner-kernel"
    # XNNPACK: the encoder on [B, C, 1, S] with Conv2d projections saves the delegate's
    # transposes around every convolution (export/layout.py); portable has no such layout cost,
    # nor runner-kernel (see the module docstring).
    per_group = options.grouped_conv == "per-group"
    lowered = conv2d_layout(wrapper, per_group) if options.backend == "xnnpack" and not runner_kernel else wrapper
    edge = lower(lowered, example, max_seq, options.backend, grouped_conv=options.grouped_conv)
    config = wrapper.model.config
    summary = checked_summary(edge, projection_convolutions(config, options.grouped_conv), options.backend,
                              outside=grouped_projections(config) if runner_kernel else 0)
    path.write_bytes(edge.to_executorch().buffer)
    choices = example["input_ids"].shape[1] if example["input_ids"].dim() == 3 else None   # fixed too
    dims = Dims(batch=(options.batch, options.batch), sequence=(1, max_seq),
                choices=(choices, choices) if choices else None)
    return ExecuTorchDetails(backend=options.backend, executorch_version=_version(executorch), graph=summary,
                             grouped_conv=None if options.grouped_conv == "xnnpack" else options.grouped_conv), dims


def projection_convolutions(config, grouped_conv: str = "xnnpack") -> int:
    """The native convolutions a program of `config` holds for its projections: one each
    (modeling.conv_projections), or with "per-group" one per group of each."""
    if grouped_conv != "per-group" or not conv_projections(config):
        return conv_projections(config)
    return config.num_hidden_layers * sum(config.groups.values())


def grouped_projections(config) -> int:
    """How many of the model's projections (modeling.conv_projections) have groups > 1: those
    runner-kernel leaves outside the delegate."""
    if not conv_projections(config):
        return 0
    return config.num_hidden_layers * sum(g > 1 for g in config.groups.values())


def checked_summary(edge, expected: int, backend: str, outside: int = 0) -> ExecuTorchGraph:
    """graph_summary of the lowered program `edge` (an EdgeProgramManager); raises ExportError
    unless it holds `expected` native convolutions, for "xnnpack" all inside the delegate but
    `outside` of them, which must be grouped (runner-kernel's)."""
    graph_module = edge.exported_program().graph_module
    summary = graph_summary(graph_module)
    found = summary.convolutions_in_delegate + summary.convolutions_outside_delegate
    if found != expected:
        raise ExportError(f"the lowered graph has {found} convolutions where the model has {expected} "
                          f"grouped projections: they were not kept as native convolutions")
    if backend == "xnnpack" and summary.convolutions_outside_delegate != outside:
        left = "fell out of the XNNPACK delegate" if not outside else f"are outside the delegate, not {outside}"
        raise ExportError(f"{summary.convolutions_outside_delegate} convolution(s) {left}")
    if outside and min(_outside_conv_groups(graph_module)) < 2:
        raise ExportError("an ungrouped convolution was left outside the XNNPACK delegate")
    return summary


def lower(module, example: dict, max_seq: int, backend: str, grouped_conv: str = "xnnpack"):
    """torch.export `module` on `example` (name -> tensor, the sequence last, dynamic from 1
    to `max_seq`), then lower it to `backend`: the EdgeProgramManager. `grouped_conv`
    "runner-kernel" keeps convolutions with groups > 1 out of the XNNPACK delegate. The
    roofline lowers its one-convolution modules through here too, so that they run as the
    model's do."""
    from executorch.exir import to_edge, to_edge_transform_and_lower

    program = torch.export.export(module, tuple(example.values()), dynamic_shapes=_dynamic_shapes(example, max_seq))
    if grouped_conv == "per-group":
        share_group_splits(program)
    if backend == "xnnpack":
        return to_edge_transform_and_lower(program, partitioner=[_xnnpack_partitioner(grouped_conv)])
    return to_edge(program)


def _xnnpack_partitioner(grouped_conv: str):
    """XNNPACK's partitioner with every op config, asking for one whole-program decomposition
    fewer (_answers_with_a_list); for "runner-kernel" its convolution config refuses grouped
    convolutions, which then stay native aten convolutions in the program."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.gemm_configs import ConvolutionConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class UngroupedConvolutionConfig(ConvolutionConfig):
        def check_constraints(self, node, ep) -> bool:
            return node.args[8] == 1 and super().check_constraints(node, ep)   # args[8]: groups

    class ListAnsweringPartitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            return _answers_with_a_list(*super().ops_to_not_decompose(ep), ep)

    configs = [UngroupedConvolutionConfig if c is ConvolutionConfig and grouped_conv == "runner-kernel" else c
               for c in ALL_PARTITIONER_CONFIGS]
    return ListAnsweringPartitioner(configs=configs)


def _answers_with_a_list(ops: list, check, ep) -> tuple:
    """XNNPACK's answer (`ops` to keep whole, `check` node -> bool), as a plain list with no
    check when every node of those ops in `ep` passes the check, else unchanged.

    Why: given a check, ExecuTorch runs two more decompositions of the whole program (keep the
    passing nodes apart, decompose, put them back); given a list, one. With every node passing,
    both keep the same nodes whole, so the program is the same: the same .pte bytes, measured for
    the tiny fp32, int8, per-group and runner-kernel programs and the full-size MNLI one; a
    full-size export about 16% faster (benchmarks/NOTES.md, stop 23). sbexport's only such op
    is aten.linear (pooler, heads), which passes. A failing node (a linear whose weight is an
    input) keeps XNNPACK's own answer: decomposing every linear instead breaks XNNPACK's
    lowering of the 3-D ones."""
    if check is None:
        return ops, None
    nodes = [node for node in ep.graph_module.graph.nodes if node.op == "call_function" and node.target in ops]
    return (ops, None) if all(check(node) for node in nodes) else (ops, check)


def _dynamic_shapes(example: dict, max_seq: int) -> dict:
    seq = torch.export.Dim("sequence", min=1, max=max_seq)
    return {name: {t.dim() - 1: seq} for name, t in example.items()}


def graph_summary(graph_module) -> ExecuTorchGraph:
    """Delegate count, ops left outside delegates, and convolutions by where they run; the
    convolutions of a DelegatedLayerNorm (export/layout.py) are counted apart, not as
    projections."""
    outside = Counter()
    inside_convs = Counter()   # projection / layernorm -> count
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if name == "executorch_call_delegate":
            lowered = getattr(graph_module, node.args[0].target)
            inside_convs.update(_conv_role(n) for n in _convs(lowered.original_module.graph_module))
        elif name not in ("getitem", "sym_size"):
            outside[name] += 1
    return ExecuTorchGraph(
        delegates=sum(1 for n, _ in graph_module.named_children() if n.startswith("lowered_module")),
        convolutions_in_delegate=inside_convs["projection"],
        convolutions_outside_delegate=outside.get("convolution", 0),
        ops_outside_delegate=dict(outside.most_common()),
        layernorm_convolutions=inside_convs["layernorm"] or None)


def _outside_conv_groups(graph_module) -> list[int]:
    """The group count of every convolution outside a delegate (its args[8])."""
    return [n.args[8] for n in _convs(graph_module)]


def _convs(graph_module) -> list:
    """The convolution nodes of `graph_module`'s graph, in order."""
    return [n for n in graph_module.graph.nodes if n.op == "call_function" and _op_name(n.target) == "convolution"]


def _conv_role(node) -> str:
    """"layernorm" for a convolution a DelegatedLayerNorm computes (the module that called it,
    as torch.export records in nn_module_stack), else "projection"."""
    stack = node.meta.get("nn_module_stack") or {}
    caller = list(stack.values())[-1][1] if stack else ""   # (path, "package.module.Class")
    norm = f"{DelegatedLayerNorm.__module__}.{DelegatedLayerNorm.__qualname__}"
    return "layernorm" if caller == norm else "projection"


def _op_name(target) -> str:
    """'aten.convolution.default' or an EdgeOpOverload -> 'convolution'."""
    name = getattr(target, "__name__", str(target))
    return name.split(".")[-2] if name.count(".") >= 2 else name.split(".")[0]


def _version(module) -> str:
    from importlib.metadata import version
    return version(module.__name__)
