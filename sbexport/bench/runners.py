"""The host's models as callables feeds -> outputs: the PyTorch reference for eager, else the
exported file through sbexport.runtime (which picks ONNX Runtime or ExecuTorch by its suffix).
The host target times these and the memory probe's subprocess loads them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tasks import INPUT_NAMES, Task


@dataclass(frozen=True)
class HostModel:
    """`run(feeds) -> outputs as numpy`, and what it runs: a file and its size, or for eager
    the fp32 weights held in memory (no file)."""

    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    file: str
    file_bytes: int


def open_model(task: Task, runtime: str, model, artifact: Path | None, threads: int) -> HostModel:
    """`model` (a BenchModel) on `runtime`: eager builds the reference, the others open the
    artifact folder's model file with runtime.open_runner (`threads`: ONNX Runtime's per-session
    count; torch's and ExecuTorch's pools are the caller's, see threads.py). Raises
    SbexportError when the file does not load."""
    if runtime == "eager":
        return _eager(task, model)
    from ..artifact import read_manifest
    from ..runtime import open_runner

    path = Path(artifact) / read_manifest(artifact)["model_file"]
    runner = open_runner(path, INPUT_NAMES, threads)
    return HostModel(runner.run, path.name, path.stat().st_size)


def _eager(task: Task, model) -> HostModel:
    import torch

    from ..export import ExportWrapper
    from ..source import build_reference

    module = ExportWrapper(build_reference(task, model.source, model.build_config), task).eval()

    def run(feeds):
        with torch.inference_mode():
            return [o.numpy() for o in module(*(torch.from_numpy(feeds[k]) for k in INPUT_NAMES))]

    weights = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return HostModel(run, "(weights in memory)", weights)
