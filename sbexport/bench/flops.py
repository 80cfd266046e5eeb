"""Count a model's FLOPs at one input shape from the ops it actually runs, not from a formula.

torch.utils.flop_counter.FlopCounterMode intercepts every aten op of one eager forward pass and
counts 2 FLOPs per multiply-accumulate of the matrix ops: convolution (SqueezeBERT's grouped
1x1 convs, groups taken into account), mm / addmm / bmm (BERT's Linear layers, both models'
attention products, the pooler and classifier) and scaled-dot-product attention when used. It
does not count element-wise work: softmax, LayerNorm, GELU, residual adds, embedding lookups.
Those are under 1% of the total for both models at every length benchmarked, but memory-bound,
so they cost more time than their FLOPs say.

The count is of the eager PyTorch model; ONNX Runtime and ExecuTorch run the same graph, so
every runtime at one shape gets the same figure.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

COUNTED = "2 x multiply-accumulates of convolution, mm, addmm, bmm and SDPA (FlopCounterMode); " \
          "element-wise ops (softmax, LayerNorm, GELU, adds) are not counted"


def count_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward pass of `module` on `inputs`.

    Returns (total, {op name: flops}), e.g. {"convolution": ..., "bmm": ...}. Runs the module
    once under no_grad; raises whatever the module raises.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    by_op = Counter()
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        by_op[str(op).removeprefix("aten.")] += int(flops)
    return int(counter.get_total_flops()), dict(by_op)


def model_flops(task, model, batch: int, seq_lens) -> dict[int, dict]:
    """{seq_len: {"total": flops, "by_op": {...}}} of `model` (an inputs.BenchModel) for `task`,
    counted on its eager reference at [batch, seq_len] on the benchmark's inputs."""
    from ..export import ExportWrapper
    from ..source import build_reference
    from ..tasks import INPUT_NAMES
    from .target import feeds_for

    wrapper = ExportWrapper(build_reference(task, model.source, model.build_config), task).eval()
    out = {}
    for seq_len in seq_lens:
        feeds = feeds_for(task, model.config, batch, seq_len)
        total, by_op = count_flops(wrapper, tuple(torch.from_numpy(feeds[k]) for k in INPUT_NAMES))
        out[seq_len] = {"total": total, "by_op": by_op}
    return out
