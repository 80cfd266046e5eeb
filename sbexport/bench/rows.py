"""The report's rows: one per runtime x model x sequence length, from the timings, FLOP counts,
peak memory and ceiling of a run. Statistics are numpy percentiles (linear interpolation)."""

from __future__ import annotations

import numpy as np

from .inputs import INT8_RUNTIMES
from .target import Loaded, Peak, Timing


def build_rows(runtimes, models, config, threads: int, loads: dict, timings: dict, flops: dict, peaks: dict,
               ceiling: dict) -> list[dict]:
    """Rows in the order runtime, sequence length, model.

    loads: (arch, runtime) -> Loaded; timings: (arch, runtime, seq_len) -> Timing; flops:
    arch -> {seq_len: {"total", "by_op"}}; peaks: (arch, runtime) -> Peak (absent: not
    measured). The ratio (BERT-base p50 over SqueezeBERT p50, same runtime and shape) is None
    unless both ran."""
    rows = []
    for rt in runtimes:
        for seq_len in config.seq_lens:
            p50 = {m.arch: float(np.percentile(timings[m.arch, rt, seq_len].times_s, 50)) for m in models}
            ratio = p50["bert"] / p50["squeezebert"] if {"bert", "squeezebert"} <= set(p50) else None
            for m in models:
                facts = {"model": m.arch, "runtime": rt, "seq_len": seq_len, "batch": config.batch, "threads": threads}
                rows.append({**facts, **_figures(loads[m.arch, rt], timings[m.arch, rt, seq_len], config.batch,
                                                 flops[m.arch][seq_len], peaks.get((m.arch, rt)), seq_len,
                                                 None if rt in INT8_RUNTIMES.values() else ceiling, ratio)})
    return rows


def _figures(loaded: Loaded, timing: Timing, batch: int, flops: dict, peak: Peak | None, seq_len: int,
             ceiling: dict | None, ratio: float | None) -> dict:
    """One row's figures; `ceiling` None (int8 rows: the fp32 sgemm rate does not bound them)
    leaves pct_of_ceiling null."""
    times = np.asarray(timing.times_s) * 1e3
    p50 = float(np.percentile(times, 50))
    gflops = flops["total"] / (p50 / 1e3) / 1e9
    return {
        "load_ms": _r(loaded.load_s * 1e3), "first_run_ms": _r(timing.first_s * 1e3),
        "min_ms": _r(times.min()), "p50_ms": _r(p50), "p90_ms": _r(np.percentile(times, 90)),
        "p99_ms": _r(np.percentile(times, 99)), "mean_ms": _r(times.mean()), "std_ms": _r(times.std()),
        "runs": len(times), "throughput_seq_per_s": _r(batch / (p50 / 1e3)),
        "file": loaded.file, "file_bytes": loaded.file_bytes,
        "peak_rss_mb": _r(peak.peak_mb[seq_len], 4) if peak else None,
        "rss_increase_mb": _r(peak.peak_mb[seq_len] - peak.baseline_mb, 4) if peak else None,
        "flops": flops["total"], "flops_by_op": flops["by_op"], "gflops_per_s": _r(gflops),
        "pct_of_ceiling": _r(100 * gflops / ceiling["gflops"]) if ceiling else None,
        "ratio_bert_over_squeezebert": _r(ratio) if ratio is not None else None,
        "cpu_wait_pct": timing.cpu_wait_pct,
    }


def _r(x, digits: int = 5) -> float:
    """`x` to `digits` significant digits: enough for any of these figures, short in the JSON."""
    return float(f"{float(x):.{digits}g}")
