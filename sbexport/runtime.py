"""Runners: ONNX Runtime for an .onnx file, executorch.runtime for a .pte, and the PyTorch
reference itself (TorchRunner).

Every runner has run(feeds): a dict of int64 numpy arrays keyed by input name in, the outputs
as float32 numpy arrays in the task's output order out. verify, predict, bench and eval run
models through here; android_demo's native runner (targets/runner.py) answers the same way.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from .errors import SbexportError, first_line


class OnnxRunner:
    """An ONNX Runtime session on the CPU.

    `threads` sets intra-op threads (0: ONNX Runtime's default). Spinning is off so that an
    idle session does not steal cores from the next one when models are interleaved.
    """

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors on a bad file
            raise SbexportError(f"{path}: not a loadable ONNX model ({first_line(e) or type(e).__name__})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for `feeds`; raises SbexportError naming the input shapes when the file
        refuses them (a shape outside its dims, a wrong dtype)."""
        try:
            return self.session.run(None, {k: np.ascontiguousarray(feeds[k]) for k in self.input_names})
        except Exception as e:  # onnxruntime's errors are untyped
            raise _run_error(self.path, feeds, e) from None


class ExecuTorchRunner:
    """The `forward` method of a .pte program in executorch's Python runtime.

    It runs on ExecuTorch's process-wide thread pool, which belongs to the entry point
    (threads.thread_settings), not to a runner.
    """

    def __init__(self, path: Path, input_names: tuple[str, ...]):
        self.path = path
        try:
            self.program, self.method = _load(path)
        except Exception as e:  # the pybind layer raises RuntimeError/ValueError on bad files
            # The runtime logged the cause to stderr: load again (it fails the same way) to read it.
            with _runtime_log() as log:
                try:
                    _load(path)
                except Exception:  # the same failure, expected
                    pass
            raise SbexportError(f"{path}: not a loadable ExecuTorch program "
                                f"({_log_reason(log) or first_line(e) or type(e).__name__})") from None
        self.input_names = list(input_names)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for `feeds`; raises SbexportError naming the input shapes when the program
        refuses them (a batch other than its fixed one, a sequence past its maximum)."""
        import torch

        inputs = [torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in self.input_names]
        try:   # nothing but the call: the bench times this
            outputs = self.method.execute(inputs)
        except Exception as e:  # the pybind layer raises RuntimeError with an error code
            raise _run_error(self.path, feeds, self._refusal_reason(inputs) or e) from None
        return [o.detach().numpy() for o in outputs]

    def _refusal_reason(self, inputs) -> str:
        """Why the program refused `inputs`: the runtime logs the cause to stderr, so the call
        is repeated (a refusal is deterministic) with that log collected."""
        with _runtime_log() as log:
            try:
                self.method.execute(inputs)
            except Exception:  # the refusal again, expected
                pass
        return _log_reason(log)


def _load(path: Path):
    """(program, its forward method) of the .pte at `path`; raises what the runtime raises."""
    program = _executorch_runtime().get().load_program(str(path))
    return program, program.load_method("forward")


def _executorch_runtime():
    """executorch.runtime.Runtime. Its first import logs warnings (torchao's optional CUDA
    kernels are missing, a torch deprecation inside torchao) that concern neither this tool nor
    its user: the CLI hides them (cli.third_party_quiet), a library call leaves logging alone."""
    from executorch.runtime import Runtime
    return Runtime


@contextlib.contextmanager
def _runtime_log():
    """Collect what executorch's runtime logs (it writes to sys.stderr: cpuinfo probes, then
    the cause of a failure) while a failed load or run is repeated, so that the failure names
    its cause in its one error line. Never around a call that succeeds: a timed run or a load
    leaves sys.stderr alone."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


def _log_reason(buffer: io.StringIO) -> str:
    """The first line the runtime logged that is not a cpuinfo probe, without its [file:line]."""
    for line in buffer.getvalue().splitlines():
        if line.strip() and not line.startswith("[cpuinfo"):
            return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())[:300]
    return ""


class TorchRunner:
    """The PyTorch reference (an eval-mode model of sbexport.modeling or modeling_bert) as a
    runner: its named outputs `output_names` as numpy, computed under inference_mode."""

    def __init__(self, model, output_names: tuple[str, ...]):
        self.model, self.output_names = model, output_names

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return [getattr(out, name).numpy() for name in self.output_names]


def open_runner(path: Path, input_names: tuple[str, ...], threads: int = 0):
    """A runner for the model file at `path`, chosen by its suffix. `threads` is ONNX Runtime's
    per-session count (0: its default); ExecuTorch's pool is the caller's (threads.py)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxRunner(path, threads)
    if path.suffix == ".pte":
        return ExecuTorchRunner(path, input_names)
    raise SbexportError(f"{path}: unknown model file type (expected .onnx or .pte)")


def run_rows(run, feeds: dict[str, np.ndarray], batch: int, fixed: bool) -> list[np.ndarray]:
    """`run` (a runner's run) over feeds of any number of rows (axis 0), `batch` rows a call:
    a fixed-batch file (`fixed`, ExecuTorch --batch N) takes exactly `batch`, so a short last
    call is filled with copies of its last row, whose outputs are dropped. Returns each
    output's rows in order, [rows, ...]."""
    rows = len(next(iter(feeds.values())))
    parts = []
    for start in range(0, rows, batch):
        chunk = {k: v[start:start + batch] for k, v in feeds.items()}
        short = batch - len(next(iter(chunk.values()))) if fixed else 0
        if short:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in chunk.items()}
        parts.append([out[:len(out) - short] for out in run(chunk)])
    return [np.concatenate(outs) for outs in zip(*parts)]


def _run_error(path: Path, feeds: dict[str, np.ndarray], reason: Exception | str) -> SbexportError:
    shapes = ", ".join(f"{k} {list(np.shape(v))} {np.asarray(v).dtype}" for k, v in feeds.items())
    reason = reason if isinstance(reason, str) else first_line(reason) or type(reason).__name__
    return SbexportError(f"{path}: the model refused inputs {shapes} ({reason})")
