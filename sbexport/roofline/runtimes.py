"""The runtimes the roofline times one projection in, behind one small interface.

A runtime is an object with
    name, label                      short name (the --runtimes choice) and the report's label
    unavailable() -> str | None      why it cannot run here (a package does not import), or None
    prepare(conv, max_seq, folder, threads) -> run
                                     build whatever it runs (a model file in `folder`, a session,
                                     a loaded program) for the weights `conv` and sequences
                                     1..max_seq; `run(x)` takes x [1, cin, seq] float32 numpy
                                     and returns [1, cout, seq] float32 numpy
A run may also have `op_times(x, warmup, repeats) -> (op_s, call_s)`: the runtime's own time of
the convolution operator in each of `repeats` calls after `warmup` untimed ones, and of the
whole call it sat in, from the runtime's profiler (OpTimed; ExecuTorch's ETDump). run.py times
those calls after the wall-time ones, so that the profiler costs the wall figures nothing.
and RUNTIMES is the table of them. The native kernel of kernels/ is one more entry
(KernelsConv, "kernels"): its prepare loads the built library through ctypes and returns a
callable of the same form; nothing else changes (run.run_roofline takes the table as an argument, so a test
can pass one with a stand-in kernel). Every runtime's output is checked against a float64
reference before it is timed.

Thread pools: torch's and ExecuTorch's belong to the entry point (threads.thread_settings);
ONNX Runtime takes `threads` per session (runtime.OnnxRunner), as everywhere in sbexport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..bench.machine import runtime_unavailable
from ..errors import SbexportError
from ..threads import thread_settings
from .shapes import Projection

Run = Callable[[np.ndarray], np.ndarray]


class OpTimed(Protocol):
    """A Run that can also time its convolution operator alone (see the module docstring)."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def op_times(self, x: np.ndarray, warmup: int, repeats: int) -> tuple[list[float], list[float]]: ...


@dataclass(frozen=True)
class ConvWeights:
    """One projection's weights: weight [cout, cin/g, 1] and bias [cout], float32."""

    shape: Projection
    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def random(cls, shape: Projection, seed: int) -> ConvWeights:
        """Normal weights scaled by 1/sqrt(cin/g) (outputs of unit scale for unit inputs)."""
        rng = np.random.default_rng(seed)
        fan_in = shape.cin // shape.groups
        weight = rng.standard_normal((shape.cout, fan_in, 1), dtype=np.float32) / np.float32(np.sqrt(fan_in))
        return cls(shape, weight, rng.standard_normal(shape.cout, dtype=np.float32))

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The grouped 1x1 convolution of x [1, cin, seq] in float64 numpy (independent of
        every runtime timed): [1, cout, seq]."""
        g, (cout, fan_in, _) = self.shape.groups, self.weight.shape
        w = self.weight[:, :, 0].astype(np.float64).reshape(g, cout // g, fan_in)   # [g, cout/g, cin/g]
        xs = x[0].astype(np.float64).reshape(g, fan_in, -1)                         # [g, cin/g, seq]
        return (np.einsum("goi,gis->gos", w, xs).reshape(cout, -1) + self.bias[:, None])[None]


class TorchConv:
    """torch.nn.functional.conv1d in eager mode, under inference_mode, on torch's pool at the
    run's threads for the call only (run.py keeps it at one thread around the other runtimes)."""

    name, label = "torch", "torch conv1d"

    def unavailable(self) -> str | None:
        return None

    def prepare(self, conv: ConvWeights, max_seq: int, folder: Path, threads: int) -> Run:
        import torch

        weight, bias, groups = torch.from_numpy(conv.weight), torch.from_numpy(conv.bias), conv.shape.groups

        def run(x: np.ndarray) -> np.ndarray:
            with thread_settings(threads), torch.inference_mode():
                return torch.nn.functional.conv1d(torch.from_numpy(x), weight, bias, groups=groups).numpy()
        return run


class OnnxConv:
    """ONNX Runtime's Conv: a one-node model (opset 18, the exporter's default, a dynamic
    sequence axis) run through runtime.OnnxRunner, with the session options every sbexport
    command uses."""

    name, label = "onnx", "ONNX Runtime Conv"

    def unavailable(self) -> str | None:
        return runtime_unavailable("onnx")

    def prepare(self, conv: ConvWeights, max_seq: int, folder: Path, threads: int) -> Run:
        import onnx

        from ..runtime import OnnxRunner

        path = folder / f"conv-{conv.shape.cin}x{conv.shape.cout}-g{conv.shape.groups}.onnx"
        onnx.save(conv_model(conv), str(path))
        runner = OnnxRunner(path, threads)
        return lambda x: runner.run({"x": x})[0]


def conv_model(conv: ConvWeights):
    """The ModelProto of one Conv node: x [1, cin, sequence] -> y [1, cout, sequence]."""
    from onnx import TensorProto, checker, helper, numpy_helper

    s = conv.shape
    node = helper.make_node("Conv", ["x", "weight", "bias"], ["y"], group=s.groups, kernel_shape=[1])
    graph = helper.make_graph(
        [node], "projection",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, s.cin, "sequence"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, s.cout, "sequence"])],
        initializer=[numpy_helper.from_array(conv.weight, "weight"), numpy_helper.from_array(conv.bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    checker.check_model(model)
    return model


class ExecuTorchConv:
    """XNNPACK through ExecuTorch: a module of one Conv1d, exported with a dynamic sequence
    (1..max_seq) and lowered by export.executorch.lower as sbexport's exporter does, checked
    to have its convolution inside the delegate, run through runtime.ExecuTorchRunner.

    Two figures. The wall time of the call includes the layout changes the delegate puts around
    this lone convolution: XNNPACK runs it channels-last, so x [1, cin, S] is transposed to
    [1, S, cin] and the output back (with static reshapes), up to a fifth of the call at seq 128.
    The model does not pay those per convolution (export/layout.py runs the encoder on
    [B, C, 1, S] so that convolutions feed each other channels-last inside the delegate), so
    the run's op_times also gives XNNPACK's convolution event alone, read from ETDump (an
    XnnpackConvRun).

    `per_group` ("executorch-per-group"): the projection as `executorch --grouped-conv
    per-group` exports it (export/layout.py's PerGroupConv2d on [1, cin, 1, S]): one dense
    convolution per group, which XNNPACK runs as fully-connected GEMMs; its operator time is the
    sum of the groups' events, its wall time includes the channel split outside the delegate."""

    def __init__(self, per_group: bool = False):
        self.per_group = per_group
        self.name = "executorch-per-group" if per_group else "executorch"
        self.label = "ExecuTorch XNNPACK, a dense conv per group" if per_group else "ExecuTorch XNNPACK"

    def unavailable(self) -> str | None:
        return runtime_unavailable("executorch")

    def prepare(self, conv: ConvWeights, max_seq: int, folder: Path, threads: int) -> Run:
        import torch

        from ..export.executorch import graph_summary, lower
        from ..runtime import ExecuTorchRunner

        s = conv.shape
        max_seq = max(max_seq, 2)      # torch.export specialises a dimension of size 1
        module = (_per_group_module(conv) if self.per_group else _one_conv_module(conv)).eval()
        example = {"x": torch.zeros(1, s.cin, min(max_seq, 16))}   # the sequence is dynamic
        edge = lower(module, example, max_seq, "xnnpack", grouped_conv="per-group" if self.per_group else "xnnpack")
        summary = graph_summary(edge.exported_program().graph_module)
        convolutions = s.groups if self.per_group else 1
        if (summary.convolutions_in_delegate, summary.convolutions_outside_delegate) != (convolutions, 0):
            raise SbexportError(f"the {s.key} convolution was not lowered into the XNNPACK delegate as "
                                f"{convolutions} convolution(s): {summary}")
        path = folder / f"conv-{s.cin}x{s.cout}-g{s.groups}{'-per-group' if self.per_group else ''}.pte"
        path.write_bytes(edge.to_executorch().buffer)
        return XnnpackConvRun(path, ExecuTorchRunner(path, ("x",)), convolutions)


@dataclass(frozen=True)
class XnnpackConvRun:
    """The one-convolution program at `path`: called, it runs through `runner` (timed by wall
    time); op_times runs it again, loaded with ETDump on."""

    path: Path
    runner: object      # runtime.ExecuTorchRunner of `path`
    convolutions: int = 1   # the program's convolution events per call (the per-group form: groups)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run({"x": x})[0]

    def op_times(self, x: np.ndarray, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
        """Seconds per call, for `repeats` calls on x after `warmup` untimed ones: XNNPACK's
        convolution events (etdump.pick_convolutions: the convolution or fully-connected
        operators, not the transposes and reshapes around them; summed) and the whole
        Method::execute around them."""
        import torch

        from ..bench.etdump import convolution_times, run_with_etdump

        dump = self.path.with_suffix(".etdp")
        untimed = max(warmup, 1)    # run_with_etdump makes one untimed call of its own, in the dump too
        run_with_etdump(self.path, [torch.from_numpy(x)], untimed - 1 + repeats, dump)
        op_ms, call_ms = convolution_times(dump, skip=untimed, count=self.convolutions)
        return [t / 1e3 for t in op_ms], [t / 1e3 for t in call_ms]


def _one_conv_module(conv: ConvWeights):
    """A torch module whose forward(x) is the projection, x [1, cin, seq] (the argument named x,
    as the exported program's input)."""
    import torch

    class OneConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            s = conv.shape
            self.conv = torch.nn.Conv1d(s.cin, s.cout, kernel_size=1, groups=s.groups)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(conv.weight))
                self.conv.bias.copy_(torch.from_numpy(conv.bias))

        def forward(self, x):
            return self.conv(x)

    return OneConv()


def _per_group_module(conv: ConvWeights):
    """_one_conv_module's projection in the per-group export's form: forward(x), x [1, cin, seq],
    runs export/layout.py's PerGroupConv2d (groups > 1; else the dense Conv2d) on [1, cin, 1, seq]."""
    import torch

    from ..export.layout import PerGroupConv2d, as_conv2d

    class PerGroupConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            dense = as_conv2d(_one_conv_module(conv).conv)
            self.conv = PerGroupConv2d(dense) if dense.groups > 1 else dense

        def forward(self, x):
            return self.conv(x.unsqueeze(2)).squeeze(2)

    return PerGroupConv()


class KernelsConv:
    """sbexport's own grouped 1x1 convolution (kernels/, loaded by sbexport.kernels through
    ctypes) at the ISA its CPUID dispatch picks, on a kernels thread pool of the run's threads.
    Not in the default sweep: it needs `make kernels` first."""

    name = "kernels"

    @property
    def label(self) -> str:
        """"sbexport kernels (<isa>)", the ISA the library runs on this CPU."""
        from ..kernels import load

        try:
            return f"sbexport kernels ({load().selected()})"
        except SbexportError:
            return "sbexport kernels (not built)"

    def unavailable(self) -> str | None:
        from ..kernels import load

        try:
            load()
        except SbexportError as e:
            return str(e)
        return None

    def prepare(self, conv: ConvWeights, max_seq: int, folder: Path, threads: int) -> Run:
        from ..kernels import load

        lib = load()
        pool = lib.pool(threads) if threads > 1 else None     # closed when `run` is dropped
        return lib.conv(conv.weight, conv.bias, conv.shape.groups, pool=pool)


RUNTIMES = {r.name: r for r in (TorchConv(), OnnxConv(), ExecuTorchConv(), ExecuTorchConv(per_group=True),
                                  KernelsConv())}
# `sbexport roofline` without --runtimes: the runtimes that need no build step of their own.
DEFAULT_RUNTIMES = ("torch", "onnx", "executorch")
