"""The runtimes' thread counts: one owner, the entry point (a CLI command or the bench).

torch's intra-op pool serves eager PyTorch; ExecuTorch has a process-wide pool of its own,
which XNNPACK runs on and which torch's setting does not reach. ONNX Runtime takes its count
per session (runtime.OnnxRunner), so it needs nothing here. Runners never touch these pools:
an entry point sets them once, for the block that loads and runs models, and puts them back.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch


def _executorch_pool():
    from executorch.extension.pybindings import portable_lib
    return portable_lib


@contextlib.contextmanager
def thread_settings(threads: int | None, executorch: bool = False) -> Iterator[None]:
    """Run the block with torch's pool (and ExecuTorch's, when `executorch`) at `threads`,
    then restore both. None leaves everything as it is.

    Resizing ExecuTorch's pool while a program is loaded is unsafe: enter before loading any
    .pte and drop every loaded program before the block ends (collected here before the reset).
    """
    if threads is None:
        yield
        return
    torch_before = torch.get_num_threads()
    pool = _executorch_pool() if executorch else None
    pool_before = pool._threadpool_get_thread_count() if pool else None
    torch.set_num_threads(threads)
    if pool and pool_before != threads:
        pool._unsafe_reset_threadpool(threads)
    try:
        yield
    finally:
        torch.set_num_threads(torch_before)
        if pool and pool._threadpool_get_thread_count() != pool_before:
            gc.collect()
            pool._unsafe_reset_threadpool(pool_before)
