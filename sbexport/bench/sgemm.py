"""The measured sgemm ceiling: the best rate of a square fp32 matrix product [n, n] x [n, n]
among the dense GEMMs of the libraries that bench and roofline run.

    sgemm_ceiling(threads, n, folder) -> {"gflops", "size", "repeats", "threads", "best_ms",
        "cpu_wait_pct", "library", "op", "libraries": {name: measure_library's dict}}

One library's GEMM is no roof: on the AMD Zen 4 kind (AVX-512 double-pumped, no AMX) torch's
MKL gave 74.6-93.6 GFLOP/s for 2048^3 on 1 thread where ONNX Runtime's models reached 101.8%
of it and ExecuTorch XNNPACK's 111-126% (benchmarks/results/bench_2026-12-02_seq128_zen4_*).
So each library measures the same product and the fastest sets the ceiling:

    torch        torch.mm(a, b) of two inputs
    onnxruntime  a one-node MatMul, b a constant initializer, in runtime.OnnxRunner (the session
                 options of every sbexport command: intra-op threads, spinning off)
    executorch   a Linear without bias lowered to XNNPACK (matmul_program, also the device
                 ceiling's program), in runtime.ExecuTorchRunner

Each runs on `threads`: torch's and ExecuTorch's pools are set for its measurement and put
back (threads.thread_settings; call this outside any block that holds loaded .pte programs),
ONNX Runtime takes the count per session. A library that does not import or fails is recorded
with its error and the others still run; none measured at all raises SbexportError.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import SbexportError, first_line
from ..threads import thread_settings
from .machine import best_seconds

LABELS = {"torch": "torch.mm", "onnxruntime": "ONNX Runtime MatMul", "executorch": "ExecuTorch XNNPACK Linear"}


def sgemm_ceiling(threads: int, n: int = 2048, folder: Path | None = None, repeats: int = 5) -> dict:
    """The machine's fp32 matrix-multiply rate on `threads`: the best of `repeats` n^3 products
    in each library of LIBRARIES, the fastest library's. `folder` keeps the ONNX model and the
    ExecuTorch program between calls (None: a temporary folder, removed after). Each library's
    figures are kept under "libraries"; "library" and "op" name the winner. Raises
    SbexportError when no library could measure."""
    with _folder(folder) as where:
        measured = {name: measure_library(name, threads, n, where, repeats) for name in LIBRARIES}
    done = {name: m for name, m in measured.items() if m["gflops"] is not None}
    if not done:
        raise SbexportError("no library measured the sgemm ceiling: " +
                            "; ".join(f"{name}: {m['error']}" for name, m in measured.items()))
    best = max(done, key=lambda name: done[name]["gflops"])
    return {"gflops": done[best]["gflops"], "size": n, "repeats": repeats, "threads": threads,
            "best_ms": done[best]["best_ms"], "cpu_wait_pct": done[best]["cpu_wait_pct"], "library": best,
            "op": f"{LABELS[best]} fp32 {n}x{n} @ {n}x{n}, best of {repeats}, the fastest of "
                  f"{len(LIBRARIES)} libraries",
            "libraries": measured}


def measure_library(name: str, threads: int, n: int, folder: Path, repeats: int) -> dict:
    """{"gflops", "best_ms", "cpu_wait_pct"} of library `name`'s product (the first call apart,
    then the best of `repeats`), or {"gflops": None, "error": its one-line reason}."""
    try:
        with LIBRARIES[name](n, threads, folder) as call:
            best, wait = best_seconds(call, repeats)
    except Exception as e:  # ImportError, a failed lowering, a session that will not open
        return {"gflops": None, "error": f"{type(e).__name__}: {first_line(e, 200)}"}
    return {"gflops": round(2 * n**3 / best / 1e9, 2), "best_ms": round(best * 1e3, 3), "cpu_wait_pct": wait}


def method(n: int, repeats: int = 5) -> str:
    """The ceiling's method note, for bench's and roofline's reports."""
    return (f"the measured sgemm ceiling: fp32 {n}x{n} @ {n}x{n} in each library ("
            + ", ".join(LABELS.values()) + f"), best of {repeats} calls each on the same threads, the fastest "
            "library's rate (each library's in \"libraries\"; not the datasheet peak)")


def libraries_text(ceiling: dict) -> str:
    """"torch.mm 93.6, ONNX Runtime MatMul 189.0, ExecuTorch XNNPACK Linear failed" (GFLOP/s)
    for the terminal reports; "" for a ceiling without per-library figures (a device's, a file
    written before they were kept)."""
    return ", ".join(f"{LABELS.get(name, name)} " + (f"{m['gflops']:.1f}" if m["gflops"] is not None else "failed")
                     for name, m in ceiling.get("libraries", {}).items())


# -- each library's product: a context manager yielding the call to time ------------------------


def _operand(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, n), dtype=np.float32)


@contextlib.contextmanager
def _torch_mm(n: int, threads: int, folder: Path) -> Iterator[Callable[[], object]]:
    a, b = torch.from_numpy(_operand(n, 0)), torch.from_numpy(_operand(n, 1))
    out = torch.empty(n, n)
    with thread_settings(threads):
        yield lambda: torch.mm(a, b, out=out)


@contextlib.contextmanager
def _onnxruntime_matmul(n: int, threads: int, folder: Path) -> Iterator[Callable[[], object]]:
    from ..runtime import OnnxRunner

    runner = OnnxRunner(matmul_model(n, folder), threads)
    feeds = {"a": _operand(n, 0)}
    yield lambda: runner.run(feeds)


@contextlib.contextmanager
def _executorch_linear(n: int, threads: int, folder: Path) -> Iterator[Callable[[], object]]:
    from ..runtime import ExecuTorchRunner

    path, feeds = matmul_program(n, folder), {"x": _operand(n, 0)}
    with thread_settings(threads, executorch=True):
        loaded = [ExecuTorchRunner(path, ("x",))]
        try:
            yield lambda: loaded[0].run(feeds)
        finally:
            loaded.clear()     # unloaded before thread_settings resizes the pool back


LIBRARIES = {"torch": _torch_mm, "onnxruntime": _onnxruntime_matmul, "executorch": _executorch_linear}


def matmul_model(n: int, folder: Path) -> Path:
    """A one-node ONNX model computing a @ b for a [n, n] (input "a") and b a constant [n, n]
    initializer (ONNX Runtime packs it once, as it does a model's weights). Written once per n
    into `folder` (16 MB at n=2048), through a temporary name."""
    path = folder / f"matmul-{n}.onnx"
    if path.is_file():
        return path
    import onnx
    from onnx import TensorProto, checker, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        initializer=[numpy_helper.from_array(_operand(n, 1), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp-onnx")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return path


def matmul_program(n: int, folder: Path) -> Path:
    """An ExecuTorch program computing x @ W for x [n, n] (W a constant [n, n]), lowered to
    XNNPACK: the host's and the device's ceiling workload. Exported once per n into `folder`
    (16 MB and a few seconds at n=2048), through a temporary name."""
    path = folder / f"matmul-{n}.pte"
    if path.is_file():
        return path
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # A Linear without bias: XNNPACK takes it as a fully-connected op (a bare mm of two inputs
    # stays on the portable kernel: 2x slower at n=256, measured under qemu cortex-a53).
    layer = torch.nn.Linear(n, n, bias=False).eval()
    program = torch.export.export(layer, (torch.zeros(n, n),))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp-pte")
    tmp.write_bytes(edge.to_executorch().buffer)
    tmp.replace(path)
    return path


@contextlib.contextmanager
def _folder(folder: Path | None) -> Iterator[Path]:
    if folder is not None:
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="sbexport-sgemm-") as tmp:
        yield Path(tmp)
