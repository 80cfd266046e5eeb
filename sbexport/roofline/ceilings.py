"""The machine's measured ceilings, the roofline's two roofs, at a given thread count.

- Compute: the "measured sgemm ceiling", the best rate of a large square fp32 matrix product
  n x n by n x n among the libraries the roofline runs (bench.sgemm.sgemm_ceiling: torch.mm,
  ONNX Runtime's MatMul, ExecuTorch XNNPACK; best of 5 each, the fastest library's). It is what
  a tuned dense GEMM reaches on these cores, not the datasheet peak (cores x FMA width x clock),
  which no kernel reaches.
- Memory: the best rate of a large fp32 copy in torch (dst.copy_(src)), counted as bytes read
  plus bytes written (STREAM's "copy" convention), on buffers far larger than the caches:
  the DRAM roof. A projection's weights (0.6 to 2.4 MB) and short activations fit in the
  caches, so a point may sit above the slanted part of that roof.

The copy runs on torch's intra-op pool, whose size the caller sets (threads.thread_settings,
owned by the entry point); the sgemm ceiling sets each library's pool to the same size for its
own measurement. The figures are labelled with that size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..bench import sgemm
from ..bench.machine import best_seconds


def bandwidth(threads: int, megabytes: int = 256, repeats: int = 5) -> dict:
    """Memory rate of a `megabytes` fp32 copy on torch's current pool: best of `repeats`.
    Returns {"gbytes_per_s", "megabytes", "repeats", "threads", "best_ms", "cpu_wait_pct", "op"}."""
    n = megabytes * 2**20 // 4
    src, dst = torch.ones(n), torch.empty(n)
    best, wait = best_seconds(lambda: dst.copy_(src), repeats)    # the untimed first copy faults the pages in
    return {"gbytes_per_s": round(2 * n * 4 / best / 1e9, 2), "megabytes": megabytes, "repeats": repeats,
            "threads": threads, "best_ms": round(best * 1e3, 3), "cpu_wait_pct": wait,
            "op": f"torch copy_ of {megabytes} MB fp32 (read + write counted), best of {repeats}"}


def ceilings(threads: int, sgemm_size: int, bandwidth_mb: int, folder: Path) -> dict:
    """Both roofs on `threads`: {"threads", "sgemm": sgemm.sgemm_ceiling's dict, "bandwidth":
    bandwidth's dict}. The caller has torch's pool at `threads` and no .pte program loaded;
    `folder` keeps the sgemm's models between calls."""
    return {"threads": threads, "sgemm": sgemm.sgemm_ceiling(threads, sgemm_size, folder),
            "bandwidth": bandwidth(threads, bandwidth_mb)}


def better(start: dict, end: dict) -> dict:
    """A roof is what the machine can do, so of two measurements of ceilings() on the same
    threads (before and after the sweep) the better of each kind is kept; both rates stay in
    it (start_*, end_*), their gap shows how much the machine drifted."""
    out = {"threads": start["threads"]}
    for kind, rate in (("sgemm", "gflops"), ("bandwidth", "gbytes_per_s")):
        best = max(start[kind], end[kind], key=lambda m: m[rate])
        out[kind] = {**best, f"start_{rate}": start[kind][rate], f"end_{rate}": end[kind][rate],
                     "op": best["op"] + "; measured before and after the sweep, the better kept"}
    return out
