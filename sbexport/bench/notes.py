"""How each figure was measured, stored beside the figures in the report's "method"."""

from __future__ import annotations

from .flops import COUNTED


def method_notes(config, target_notes: dict) -> dict:
    """The notes of a run of `config`: what the target says of its own measurements
    (timing, load, threads, memory, ceiling, cpu_wait_pct; see target.py) and what the pipeline
    does the same on every target (interleaving, FLOPs, verification)."""
    return {
        "timing": target_notes["timing"],
        "interleaving": "both models loaded, then for each run: squeezebert then bert, order reversed "
                        "every other run; one runtime at a time",
        "load": target_notes["load"],
        "threads": target_notes["threads"],
        "flops": COUNTED + "; counted on the eager model at each shape, so equal across runtimes",
        "memory": target_notes["memory"] if config.memory else "not measured (memory=False)",
        "ceiling": target_notes["ceiling"] + ", measured before the exports and after the timing, the better "
                   "kept; pct_of_ceiling = achieved GFLOP/s at p50 / that rate",
        "cpu_wait_pct": target_notes["cpu_wait_pct"],
        "verified": ("each export was parity-checked against PyTorch before timing" if config.verify
                     else "exports were NOT parity-checked (verify=False)") + _int8_note(config),
    }


def host_notes(config) -> dict:
    """The host target's notes (host.HostTarget.notes)."""
    from . import memory, sgemm

    return {
        "timing": "wall time (perf_counter_ns) around one call of the runtime on fixed [batch, seq] int64 "
                  "inputs, outputs converted to numpy; first call at each shape reported apart, then "
                  f"{config.warmup} untimed and {config.runs} timed calls; percentiles by linear "
                  "interpolation (with few runs p99 is close to the maximum)",
        "load": "eager: building the reference (random init or checkpoint read); onnx: creating the "
                "ONNX Runtime session; executorch: load_program + load_method",
        "threads": "torch.set_num_threads (eager), ONNX Runtime intra_op_num_threads with spinning off, "
                   "ExecuTorch's threadpool reset to the same count (XNNPACK runs on it)",
        "memory": memory.__doc__.strip().split("\n\n")[0].replace("\n", " "),
        "ceiling": sgemm.method(config.sgemm_size),
        "cpu_wait_pct": "time this process's threads were ready but waiting for a CPU during the timed runs "
                        "(Linux schedstat), as % of wall time, summed over threads: near 0 on a quiet "
                        "machine; above a few %, other work took the cores and the latencies are inflated",
    }


def _int8_note(config) -> str:
    from .inputs import INT8_RUNTIMES

    if not set(config.formats) & set(INT8_RUNTIMES.values()):
        return ""
    return ("; int8 files: SqueezeBERT's convolutions static int8, BERT-base ONNX Runtime's dynamic recipe, "
            "each quantized from the checked fp32 file; their accuracy guard figures are in `artifacts`, "
            "recorded, not enforced (random weights decide by margins under int8's error)")
