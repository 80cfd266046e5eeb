"""Run an exported file: ONNX Runtime for .onnx, executorch.runtime for .pte.

Every runner takes a dict of int64 numpy arrays keyed by input name and returns the outputs
as float32 numpy arrays, in the task's output order. verify, predict, bench and eval all run
exported files through here.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from .errors import SbexportError


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
            raise SbexportError(f"{path}: not a loadable ONNX model ({_first_line(e)})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for `feeds`; raises SbexportError naming the input shapes when the file
        refuses them (a shape outside its dims, a wrong dtype)."""
        try:
            return self.session.run(None, {k: np.ascontiguousarray(feeds[k]) for k in self.input_names})
        except Exception as e:  # onnxruntime's errors are untyped
            raise _run_error(self.path, feeds, e) from None


class ExecuTorchRunner:
    """The `forward` method of a .pte program in executorch's Python runtime."""

    def __init__(self, path: Path, input_names: tuple[str, ...], threads: int = 0):
        Runtime = _executorch_runtime()
        if threads:
            _executorch_threads(threads)
        self.path = path
        with _runtime_log() as log:
            try:
                self.program = Runtime.get().load_program(str(path))
                self.method = self.program.load_method("forward")
            except Exception as e:  # the pybind layer raises RuntimeError/ValueError on bad files
                raise SbexportError(f"{path}: not a loadable ExecuTorch program "
                                    f"({_log_reason(log) or _first_line(e)})") from None
        self.input_names = list(input_names)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for `feeds`; raises SbexportError naming the input shapes when the program
        refuses them (a batch other than its fixed one, a sequence past its maximum)."""
        import torch

        with _runtime_log() as log:
            try:
                outputs = self.method.execute([torch.from_numpy(np.ascontiguousarray(feeds[k]))
                                               for k in self.input_names])
            except Exception as e:  # the pybind layer raises RuntimeError with an error code
                raise _run_error(self.path, feeds, _log_reason(log) or e) from None
        return [o.detach().numpy() for o in outputs]


def _executorch_runtime():
    """executorch.runtime.Runtime. Its first import logs warnings (torchao's optional CUDA
    kernels are missing, a torch deprecation inside torchao) that concern neither this tool nor
    its user: the CLI hides them (cli.third_party_quiet), a library call leaves logging alone."""
    from executorch.runtime import Runtime
    return Runtime


@contextlib.contextmanager
def _runtime_log():
    """Collect what executorch's runtime logs while it loads or runs (it writes to sys.stderr:
    cpuinfo probes, then the cause of a failure), so that a failure names its cause in its one
    error line and a success prints nothing."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


def _log_reason(buffer: io.StringIO) -> str:
    """The first line the runtime logged that is not a cpuinfo probe, without its [file:line]."""
    for line in buffer.getvalue().splitlines():
        if line.strip() and not line.startswith("[cpuinfo"):
            return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())[:300]
    return ""


def _executorch_threads(threads: int) -> None:
    """Size ExecuTorch's own thread pool, which XNNPACK runs on (torch's thread count does not
    reach it). Resized only when it differs: resizing under a loaded delegate is unsafe, and
    programs loaded side by side (bench) ask for the same count."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


def open_runner(path: Path, input_names: tuple[str, ...], threads: int = 0):
    """A runner for the model file at `path`, chosen by its suffix."""
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxRunner(path, threads)
    if path.suffix == ".pte":
        return ExecuTorchRunner(path, input_names, threads)
    raise SbexportError(f"{path}: unknown model file type (expected .onnx or .pte)")


def _run_error(path: Path, feeds: dict[str, np.ndarray], reason: Exception | str) -> SbexportError:
    shapes = ", ".join(f"{k} {list(np.shape(v))} {np.asarray(v).dtype}" for k, v in feeds.items())
    reason = reason if isinstance(reason, str) else _first_line(reason)
    return SbexportError(f"{path}: the model refused inputs {shapes} ({reason})")


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
