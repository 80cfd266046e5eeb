"""Forms of one SqueezeBERT projection in ExecuTorch's XNNPACK delegate, timed interleaved:
which graph form of a grouped 1x1 convolution XNNPACK runs fastest (issue 10, section 2).

For one shape (default 768x768/g4, the q/k/v projections) and the same weights, each form is
exported with a dynamic sequence (1..512) and lowered as sbexport lowers the model
(export.executorch.lower), checked against the native convolution's output, then timed:

    conv     the native grouped Conv1d (what sbexport exports; XNNPACK: a convolution node, IGEMM)
    conv2d   the same as Conv2d over [1, C, 1, S] (what ExecuTorch's Conv1dUnsqueezePass makes anyway)
    split    one dense Conv1d per group on a channel slice, then cat (XNNPACK: one fully-connected
             node per group, as XNNPACK defines a groups=1 1x1 convolution)
    bmm      the groups as a batch of matrix products (not a convolution: the opt-in form)
    blockdiag  one dense Conv1d with the block-diagonal weight (groups x the FLOPs; the "dense"
             rate of the same output, XNNPACK's fully-connected path)

GFLOP/s counts the grouped projection's own FLOPs (roofline.shapes.Projection.flops) for every
form, so blockdiag's figure is its useful rate; its raw rate is groups times that. Per call the
process's CPU wait is read (schedstat); `quiet` is the median over calls that waited < 3% of
their wall time.

    python benchmarks/xnnpack_forms.py --shape 768x3072/g4 --threads 1 --rounds 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sbexport.bench.machine import cpu_wait_pct, load_average, scheduler_times
from sbexport.roofline.runtimes import ConvWeights
from sbexport.roofline.shapes import Projection
from sbexport.threads import thread_settings

QUIET_WAIT_PCT = 3.0


class Form(torch.nn.Module):
    """One projection of `conv` (ConvWeights) in the graph form `kind`: forward(x [1, cin, S])."""

    def __init__(self, conv: ConvWeights, kind: str):
        super().__init__()
        self.kind, self.groups = kind, conv.shape.groups
        weight, bias = torch.from_numpy(conv.weight), torch.from_numpy(conv.bias)   # [cout, cin/g, 1], [cout]
        if kind == "blockdiag":
            weight = torch.block_diag(*weight[..., 0].chunk(self.groups))[..., None]   # [cout, cin, 1]
        if kind == "bmm":
            weight = weight[..., 0].reshape(self.groups, -1, weight.shape[1])          # [g, cout/g, cin/g]
        if kind == "conv2d":
            weight = weight[..., None]                                                 # [cout, cin/g, 1, 1]
        # Weights in the form each kind uses, as parameters: an op on a parameter inside forward
        # would make XNNPACK see a computed weight and leave the convolution out of the delegate.
        self.weight, self.bias = torch.nn.Parameter(weight), torch.nn.Parameter(bias)
        if kind == "split":
            self.weights = torch.nn.ParameterList(weight.chunk(self.groups, 0))
            self.biases = torch.nn.ParameterList(bias.chunk(self.groups, 0))

    def forward(self, x):
        g, w, b = self.groups, self.weight, self.bias
        if self.kind == "conv":
            return torch.nn.functional.conv1d(x, w, b, groups=g)
        if self.kind == "conv2d":
            return torch.nn.functional.conv2d(x.unsqueeze(2), w, b, groups=g).squeeze(2)
        if self.kind == "blockdiag":
            return torch.nn.functional.conv1d(x, w, b)
        if self.kind == "split":
            pieces = zip(x.chunk(g, 1), self.weights, self.biases)
            return torch.cat([torch.nn.functional.conv1d(xi, wi, bi) for xi, wi, bi in pieces], 1)
        s = x.shape[-1]   # bmm: [g, cout/g, cin/g] @ [g, cin/g, S] -> [1, cout, S]
        return (torch.bmm(w, x.reshape(g, -1, s)).reshape(1, -1, s) + b[:, None])


def build(conv: ConvWeights, kind: str, folder: Path):
    """The form lowered to XNNPACK and loaded: a callable x (numpy [1, cin, S]) -> numpy."""
    from sbexport.export.executorch import graph_summary, lower
    from sbexport.runtime import ExecuTorchRunner

    edge = lower(Form(conv, kind).eval(), {"x": torch.zeros(1, conv.shape.cin, 16)}, 512, "xnnpack")
    summary = graph_summary(edge.exported_program().graph_module)
    if summary.convolutions_outside_delegate:
        raise SystemExit(f"{kind}: a convolution fell out of the XNNPACK delegate: {summary}")
    print(f"{kind}: ops outside the delegate {summary.ops_outside_delegate or 'none'}")
    path = folder / f"{kind}.pte"
    path.write_bytes(edge.to_executorch().buffer)
    runner = ExecuTorchRunner(path, ("x",))
    return lambda x: runner.run({"x": x})[0]


def parse_shape(text: str) -> Projection:
    """'768x3072/g4' -> Projection(768, 3072, 4)."""
    channels, groups = text.split("/g")
    cin, cout = channels.split("x")
    return Projection(int(cin), int(cout), int(groups), ())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="768x768/g4")
    parser.add_argument("--forms", default="conv,conv2d,split,bmm,blockdiag")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    shape, kinds = parse_shape(args.shape), args.forms.split(",")
    conv = ConvWeights.random(shape, seed=0)
    x = np.random.default_rng(1).standard_normal((1, shape.cin, args.seq_len), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp, thread_settings(args.threads, executorch=True):
        runs = {kind: build(conv, kind, Path(tmp)) for kind in kinds}
        reference = conv.reference(x)
        for kind, run in runs.items():
            print(f"{kind}: max |diff| against float64 {float(np.abs(run(x) - reference).max()):.2e}")
        times = {kind: ([], []) for kind in kinds}
        load, sched, wall = load_average(), scheduler_times(), time.perf_counter_ns()
        for k in range(args.rounds):
            for kind in kinds if k % 2 == 0 else kinds[::-1]:
                before, start = scheduler_times(), time.perf_counter_ns()
                runs[kind](x)
                ns = time.perf_counter_ns() - start
                times[kind][0].append(ns / 1e6)
                times[kind][1].append(100 * (scheduler_times()[1] - before[1]) / ns)
        wait = cpu_wait_pct(sched, wall)
    flops = shape.flops(args.seq_len)
    print(f"{shape.key} seq {args.seq_len}, {args.threads} thread(s), {args.rounds} rounds: wait {wait}%, load {load}")
    for kind, (ms, waits) in times.items():
        ms, waits = np.array(ms), np.array(waits)
        quiet = ms[waits < QUIET_WAIT_PCT]
        line = (f"  {kind:10s} p50 {np.median(ms):7.3f} ms ({flops / np.median(ms) / 1e6:6.1f} GFLOP/s)  "
                f"min {ms.min():7.3f} ms ({flops / ms.min() / 1e6:6.1f})")
        if len(quiet):
            line += f"  quiet {len(quiet)} calls p50 {np.median(quiet):.3f} ms"
        print(line)


if __name__ == "__main__":
    main()
