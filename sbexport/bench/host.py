"""SqueezeBERT against BERT-base on the host CPU: PyTorch eager, ONNX Runtime, ExecuTorch.

    run_bench(BenchConfig(...), json_path=..., plot_path=...) -> result dict (report.SCHEMA)

Order of work: check every input (before any of it is spent); measure the machine's fp32 sgemm
ceiling; export each model once per format into the work folder (cached by a key of everything
that shapes the file); count each model's FLOPs at each shape on the eager graph; then, one
runtime at a time, load both models and time them interleaved run by run (squeezebert then
bert, the order reversed every run) so that drift of the machine hits both alike; finally
measure each (model, runtime)'s peak memory in a fresh subprocess (memory.py says why).

Timing of one call is wall time (perf_counter_ns) around runner.run(feeds) on fixed inputs of
[batch, seq] int64 ids / mask / token types; outputs are converted to numpy as every caller of
the runners would. Per row: load (build or open the model), first run (the first call at that
shape after loading, kept out of the statistics), `warmup` untimed calls, `runs` timed calls.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import load_config
from ..errors import ExportError, SbexportError
from ..reportfile import check_report_path
from ..source import ModelSource, _random_init_config, build_reference, resolve_source
from ..tasks import INPUT_NAMES, Task, get_task
from ..threads import thread_settings
from . import memory, report
from .flops import COUNTED, count_flops
from .machine import (
    available_cores,
    cpu_wait_pct,
    load_average,
    machine_info,
    runtime_unavailable,
    scheduler_times,
    sgemm_ceiling,
)

RUNTIMES = ("eager", "onnx", "executorch")
MODELS = ("squeezebert", "bert")
LABELS = {"squeezebert": "SqueezeBERT", "bert": "BERT-base"}
EXPORTED = {"onnx": "onnx", "executorch": "executorch"}    # runtime -> export format


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark. The CLI fills it from its options; tests pass tiny `config_overrides`.

    checkpoints: arch -> checkpoint folder or Hub id; an arch not named runs with random
    weights from `seed` (latency does not depend on the weights). config_overrides: arch ->
    config fields replacing the public full-size ones (random init only), e.g. a 2-layer model.
    """

    task: str = "mnli"
    seq_lens: tuple[int, ...] = (8, 32, 128, 512)
    batch: int = 1
    threads: int | None = None            # None: every core this process may use
    warmup: int = 3
    runs: int = 20
    formats: tuple[str, ...] = RUNTIMES
    models: tuple[str, ...] = MODELS
    checkpoints: dict = field(default_factory=dict)
    random_init: bool = False             # random weights for every model (refused beside a checkpoint)
    config_overrides: dict = field(default_factory=dict)
    workdir: str | None = None            # export cache; None: a temporary folder, removed after
    verify: bool = True                   # parity-check each export before timing it
    memory: bool = True                   # peak RSS per row, one subprocess per (model, runtime)
    seed: int = 0
    sgemm_size: int = 2048


@dataclass
class BenchModel:
    arch: str
    source: ModelSource
    overrides: dict
    config: object                       # SqueezeBertConfig or BertConfig


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def run_bench(config: BenchConfig, *, json_path: str | None = None, plot_path: str | None = None,
              progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Benchmark, write the JSON and PNG when asked, and return the result (report.SCHEMA).

    Raises SbexportError before any work for bad input: an unknown task, format or model, a
    checkpoint that does not exist, a sequence length above a model's maximum, runs < 1, an
    unwritable output path. A runtime that is not installed is skipped with its reason. Raises
    ExportError when an export fails (export_all).
    """
    task, threads, models = prepare(config)
    for path in (json_path, plot_path):
        if path is not None:               # "" too: refused, not ignored
            check_report_path(path)
    skipped = [{"runtime": rt, "model": "*", "reason": why} for rt in config.formats
               if (why := runtime_unavailable(rt))]
    runtimes = [rt for rt in config.formats if not any(s["runtime"] == rt for s in skipped)]
    machine = machine_info(threads)          # before the work: its load average is the others'
    with _progress(config, models, runtimes, progress) as bar, _workdir(config.workdir) as workdir:
        say = log or (lambda msg: bar.write(msg, file=sys.stderr))
        bar.set_description("sgemm ceiling")
        first_ceiling = sgemm_ceiling(threads, config.sgemm_size)
        bar.update(1)
        artifacts, lineup = export_all(runtimes, task, models, config, workdir, bar, say)
        runtimes = [rt for rt in runtimes if lineup[rt]]
        bar.set_description("count FLOPs")
        flops = {}
        for model in models:
            flops[model.arch] = model_flops(task, model, config.batch, config.seq_lens)
            bar.update(1)
        timings = {rt: time_runtime(rt, task, lineup[rt], artifacts, config, threads, bar) for rt in runtimes}
        peaks = {}
        for rt in runtimes if config.memory else ():
            for model in lineup[rt]:
                bar.set_description(f"memory {model.arch} on {rt}")
                peaks[model.arch, rt] = memory.probe(memory.probe_spec(
                    rt, model, task.name, _str(artifacts.get((model.arch, rt))), config.seq_lens, config.batch,
                    threads))
                bar.update(1)
        artifact_info = {f"{arch}/{rt}": _artifact_info(folder) for (arch, rt), folder in artifacts.items()}
        bar.set_description("sgemm ceiling again")
        ceiling = best_ceiling(first_ceiling, sgemm_ceiling(threads, config.sgemm_size))
        bar.update(1)
    result = {
        "schema": report.SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sbexport_version": __version__,
        "machine": {**machine, "load_average_end": load_average()},
        "config": {**{k: v for k, v in asdict(config).items() if k not in ("checkpoints", "workdir")},
                   "seq_lens": list(config.seq_lens), "formats": list(config.formats),
                   "models": list(config.models), "threads": threads,
                   "sources": {m.arch: m.source.to_dict() for m in models}},
        "method": method_notes(config),
        "ceiling": ceiling,
        "artifacts": artifact_info,
        "rows": build_rows(runtimes, lineup, config, threads, timings, flops, peaks, ceiling),
        "skipped": skipped,
    }
    if json_path is not None:
        report.write_json(result, json_path)
    if plot_path is not None:
        report.plot(result, plot_path)
    return result


def best_ceiling(start: dict, end: dict) -> dict:
    """The ceiling is what the machine can do, so the better of the run's two measurements
    (before the exports and after the timing); both are kept, their gap shows the drift."""
    best = max(start, end, key=lambda c: c["gflops"])
    return {**best, "start_gflops": start["gflops"], "end_gflops": end["gflops"],
            "cpu_wait_pct": [start["cpu_wait_pct"], end["cpu_wait_pct"]],
            "op": best["op"] + ", measured before the exports and after the timing, the better kept"}


def prepare(config: BenchConfig) -> tuple[Task, int, list[BenchModel]]:
    """Check everything the run depends on; return (task, threads, models). Raises SbexportError."""
    task = get_task(config.task)
    for name, values, allowed in (("format", config.formats, RUNTIMES), ("model", config.models, MODELS)):
        if not values:
            raise SbexportError(f"no {name} given; choose from {', '.join(allowed)}")
        for v in values:
            if v not in allowed:
                raise SbexportError(f"unknown {name} {v!r}; expected one of {', '.join(allowed)}")
    if config.runs < 1:
        raise SbexportError(f"--runs must be at least 1 (got {config.runs}): no timed run, no statistics")
    if config.warmup < 0:
        raise SbexportError(f"--warmup must be 0 or more (got {config.warmup})")
    if config.batch < 1:
        raise SbexportError(f"--batch must be at least 1 (got {config.batch})")
    if not config.seq_lens or any(not isinstance(s, int) or s < 1 for s in config.seq_lens):
        raise SbexportError(f"--seq-lens must be positive integers (got {list(config.seq_lens)})")
    threads = config.threads if config.threads is not None else available_cores()
    if threads < 1:
        raise SbexportError(f"--threads must be at least 1 (got {threads})")
    unknown = set(config.checkpoints) - set(MODELS)
    if unknown:
        raise SbexportError(f"checkpoint given for unknown model {sorted(unknown)[0]!r}")
    models = []
    for arch in config.models:
        checkpoint = config.checkpoints.get(arch)
        overrides = dict(config.config_overrides.get(arch, {}))
        if checkpoint and overrides:
            raise SbexportError(f"config overrides apply to random init only, not to the {arch} checkpoint")
        source = resolve_source(task, model=checkpoint, random_init=config.random_init or checkpoint is None,
                                arch=arch, seed=config.seed, model_option=f"--model-{arch}")
        model_cfg = model_config(task, source, overrides)
        limit = model_cfg.max_position_embeddings
        too_long = [s for s in config.seq_lens if s > limit]
        if too_long:
            raise SbexportError(f"sequence length {max(too_long)} exceeds the {LABELS[arch]} model's maximum of "
                                f"{limit} (max_position_embeddings); use --seq-lens up to {limit}")
        models.append(BenchModel(arch, source, overrides, model_cfg))
    if config.workdir:
        _check_folder(Path(config.workdir))
    return task, threads, models


def model_config(task: Task, source: ModelSource, overrides: dict):
    """The config the reference will be built with, read without building the model."""
    if source.random_init:
        cls = task.model_class(source.arch).config_class
        return cls(**_random_init_config(task, source.arch, overrides))
    model_cfg = load_config(Path(source.resolved_path) / "config.json")
    if model_cfg.model_type != source.arch:
        raise SbexportError(f"{source.checkpoint}: a {model_cfg.model_type} checkpoint, "
                            f"given as the {source.arch} model")
    return model_cfg


# --------------------------------------------------------------------------------------
# exports, FLOPs, timing
# --------------------------------------------------------------------------------------


def export_cached(runtime: str, task: Task, model: BenchModel, config: BenchConfig, workdir: Path,
                  log: Callable[[str], None]) -> Path:
    """The artifact folder of `model` for `runtime`, exported unless the work folder holds one
    made from the same inputs and the same sbexport source (and verified, when asked)."""
    from ..artifact import open_artifact
    from ..export import ExecuTorchOptions, OnnxOptions, export_artifact
    from ..verify import verify_folder

    options = OnnxOptions(max_batch=max(1024, config.batch)) if EXPORTED[runtime] == "onnx" \
        else ExecuTorchOptions(batch=config.batch)
    max_seq_len = max(config.seq_lens)
    key = json.dumps({"fmt": EXPORTED[runtime], "task": task.name, "source": model.source.to_dict(),
                      "overrides": model.overrides, "options": asdict(options), "max_seq_len": max_seq_len,
                      "sbexport": __version__, "code": _code_fingerprint(), "torch": torch.__version__},
                     sort_keys=True)
    folder = workdir / f"{task.name}-{model.arch}-{runtime}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if folder.is_dir():
        try:
            manifest = open_artifact(folder)
        except SbexportError as e:
            log(f"re-exporting: cached {e}")
        else:
            if config.verify and not (manifest.parity and manifest.parity.passed):
                verify_folder(folder, log=log).raise_on_failure()
            log(f"using cached export {folder}")
            return folder
    return export_artifact(EXPORTED[runtime], task, model.source, folder, options, max_seq_len=max_seq_len,
                           overwrite=True, verify=config.verify, config_overrides=model.overrides or None, log=log)


def export_all(runtimes, task: Task, models: list[BenchModel], config: BenchConfig, workdir: Path,
               bar, log) -> tuple[dict, dict]:
    """Export every model for every runtime that needs a file. Returns (artifacts: (arch,
    runtime) -> folder, lineup: runtime -> the models it will time).

    Raises ExportError naming the model and runtime when an export fails or fails its parity
    check, before anything is timed: a benchmark that quietly drops a model is read as a
    complete one, and a fast wrong graph is not worth timing."""
    artifacts, lineup = {}, {rt: list(models) for rt in runtimes}
    for rt in [rt for rt in runtimes if rt in EXPORTED]:
        for model in models:
            bar.set_description(f"export {model.arch} to {rt}")
            try:
                artifacts[model.arch, rt] = export_cached(rt, task, model, config, workdir, log)
            except SbexportError as e:
                raise ExportError(f"bench stopped: the {LABELS[model.arch]} export to {rt} failed "
                                  f"(nothing was timed): {e}") from None
            bar.update(1)
    return artifacts, lineup


def _code_fingerprint() -> str:
    """sha256 of the package's source outside bench/: a change to the model or an exporter
    makes the cached exports stale."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "bench" not in path.relative_to(root).parts:
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def model_flops(task: Task, model: BenchModel, batch: int, seq_lens) -> dict[int, dict]:
    """{seq_len: {"total": flops, "by_op": {...}}} counted on the eager model at [batch, seq_len]."""
    from ..export import ExportWrapper

    wrapper = ExportWrapper(build_reference(task, model.source, model.overrides or None), task).eval()
    out = {}
    for seq_len in seq_lens:
        feeds = feeds_for(task, model.config, batch, seq_len)
        total, by_op = count_flops(wrapper, tuple(torch.from_numpy(feeds[k]) for k in INPUT_NAMES))
        out[seq_len] = {"total": total, "by_op": by_op}
    return out


def time_runtime(runtime: str, task: Task, models: list[BenchModel], artifacts: dict, config: BenchConfig,
                 threads: int, bar) -> dict:
    """Load every model on `runtime`, then time them interleaved at each sequence length.

    Returns {arch: {"load_s": float, "file_bytes": int, "file": str,
                    seq_len: {"first_s": float, "times_s": [float, ...], "cpu_wait_pct": float}}}.
    """
    out = {}
    with thread_settings(threads, executorch=runtime == "executorch"):
        runs = {}
        for model in models:
            bar.set_description(f"load {model.arch} on {runtime}")
            started = time.perf_counter()
            runs[model.arch] = open_model(runtime, model, task, _str(artifacts.get((model.arch, runtime))), threads)
            out[model.arch] = {"load_s": time.perf_counter() - started, **_file_facts(runs[model.arch])}
        for seq_len in config.seq_lens:
            bar.set_description(f"{runtime} seq {seq_len}")
            feeds = {m.arch: feeds_for(task, m.config, config.batch, seq_len) for m in models}
            order = [m.arch for m in models]
            for arch in order:                            # the first call at this shape
                out[arch][seq_len] = {"first_s": _timed(runs[arch], feeds[arch]), "times_s": []}
                bar.update(1)
            for i in range(config.warmup):
                for arch in (order if i % 2 == 0 else order[::-1]):
                    runs[arch](feeds[arch])
                    bar.update(1)
            sched_before, wall_before = scheduler_times(), time.perf_counter_ns()
            for i in range(config.runs):
                for arch in (order if i % 2 == 0 else order[::-1]):
                    out[arch][seq_len]["times_s"].append(_timed(runs[arch], feeds[arch]))
                    bar.update(1)
            wait = cpu_wait_pct(sched_before, wall_before)
            for arch in order:
                out[arch][seq_len]["cpu_wait_pct"] = wait
        del runs
        gc.collect()
    return out


def open_model(runtime: str, model: BenchModel, task: Task, artifact: str | None, threads: int):
    """A callable feeds -> outputs for `model` on `runtime`; eager builds the reference, the
    others open the artifact's file through sbexport.runtime. The callable carries
    `file_name` and `file_bytes` (eager: the fp32 weights held in memory, no file)."""
    if runtime == "eager":
        from ..export import ExportWrapper

        module = ExportWrapper(build_reference(task, model.source, model.overrides or None), task).eval()

        def run(feeds):
            with torch.inference_mode():
                return [o.numpy() for o in module(*(torch.from_numpy(feeds[k]) for k in INPUT_NAMES))]

        run.file_name = "(weights in memory)"
        run.file_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
        return run
    from ..artifact import read_manifest
    from ..runtime import ExecuTorchRunner, OnnxRunner

    folder = Path(artifact)
    path = folder / read_manifest(folder).model_file
    runner = OnnxRunner(path, threads) if runtime == "onnx" else ExecuTorchRunner(path, INPUT_NAMES)

    def run(feeds):
        return runner.run(feeds)

    run.file_name, run.file_bytes = path.name, path.stat().st_size
    return run


def feeds_for(task: Task, model_cfg, batch: int, seq_len: int) -> dict[str, np.ndarray]:
    """The fixed inputs every runtime gets at one shape: example_inputs, as int64 numpy."""
    from ..export import example_inputs
    return {k: v.numpy() for k, v in example_inputs(task, model_cfg, batch, seq_len).items()}


def _timed(run, feeds) -> float:
    started = time.perf_counter_ns()
    run(feeds)
    return (time.perf_counter_ns() - started) / 1e9


def _file_facts(run) -> dict:
    return {"file": run.file_name, "file_bytes": run.file_bytes}


def method_notes(config: BenchConfig) -> dict:
    """How each figure was measured, stored beside the figures."""
    return {
        "timing": "wall time (perf_counter_ns) around one call of the runtime on fixed [batch, seq] int64 "
                  "inputs, outputs converted to numpy; first call at each shape reported apart, then "
                  f"{config.warmup} untimed and {config.runs} timed calls; percentiles by linear "
                  "interpolation (with few runs p99 is close to the maximum)",
        "interleaving": "both models loaded, then for each run: squeezebert then bert, order reversed "
                        "every other run; one runtime at a time",
        "load": "eager: building the reference (random init or checkpoint read); onnx: creating the "
                "ONNX Runtime session; executorch: load_program + load_method",
        "threads": "torch.set_num_threads (eager), ONNX Runtime intra_op_num_threads with spinning off, "
                   "ExecuTorch's threadpool reset to the same count (XNNPACK runs on it)",
        "flops": COUNTED + "; counted on the eager model at each shape, so equal across runtimes",
        "memory": (memory.__doc__.strip().split("\n\n")[0].replace("\n", " ") if config.memory
                   else "not measured (memory=False)"),
        "ceiling": f"best of 5 torch.mm fp32 {config.sgemm_size}^3 on the same threads, measured before the "
                   "exports and after the timing, the better kept; pct_of_ceiling = achieved GFLOP/s at p50 / "
                   "that rate",
        "cpu_wait_pct": "time this process's threads were ready but waiting for a CPU during the timed runs "
                        "(Linux schedstat), as % of wall time, summed over threads: near 0 on a quiet "
                        "machine; above a few %, other work took the cores and the latencies are inflated",
        "verified": "each export was parity-checked against PyTorch before timing" if config.verify
                    else "exports were NOT parity-checked (verify=False)",
    }


# --------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------


def build_rows(runtimes, lineup, config, threads, timings, flops, peaks, ceiling) -> list[dict]:
    """One row per runtime x model x sequence length, in that order. The ratio (BERT-base p50
    over SqueezeBERT p50, same runtime and shape) is None unless both ran."""
    rows = []
    for rt in runtimes:
        for seq_len in config.seq_lens:
            p50 = {m.arch: float(np.percentile(timings[rt][m.arch][seq_len]["times_s"], 50)) for m in lineup[rt]}
            ratio = p50["bert"] / p50["squeezebert"] if {"bert", "squeezebert"} <= set(p50) else None
            for m in lineup[rt]:
                rows.append(_row(rt, m, seq_len, config, threads, timings[rt][m.arch], flops[m.arch][seq_len],
                                 peaks.get((m.arch, rt)), ceiling, ratio))
    return rows


def _row(runtime, model, seq_len, config, threads, timing, flops, peak, ceiling, ratio) -> dict:
    times = np.asarray(timing[seq_len]["times_s"]) * 1e3
    p50 = float(np.percentile(times, 50))
    gflops = flops["total"] / (p50 / 1e3) / 1e9
    return {
        "model": model.arch, "runtime": runtime, "seq_len": seq_len, "batch": config.batch, "threads": threads,
        "load_ms": _r(timing["load_s"] * 1e3), "first_run_ms": _r(timing[seq_len]["first_s"] * 1e3),
        "min_ms": _r(times.min()), "p50_ms": _r(p50), "p90_ms": _r(np.percentile(times, 90)),
        "p99_ms": _r(np.percentile(times, 99)), "mean_ms": _r(times.mean()), "std_ms": _r(times.std()),
        "runs": len(times), "throughput_seq_per_s": _r(config.batch / (p50 / 1e3)),
        "file": timing["file"], "file_bytes": timing["file_bytes"],
        "peak_rss_mb": _r(peak["peak_mb"][seq_len], 4) if peak else None,
        "rss_increase_mb": _r(peak["peak_mb"][seq_len] - peak["baseline_mb"], 4) if peak else None,
        "flops": flops["total"], "flops_by_op": flops["by_op"], "gflops_per_s": _r(gflops),
        "pct_of_ceiling": _r(100 * gflops / ceiling["gflops"]),
        "ratio_bert_over_squeezebert": _r(ratio) if ratio is not None else None,
        "cpu_wait_pct": timing[seq_len]["cpu_wait_pct"],
    }


def _artifact_info(folder: Path) -> dict:
    from ..artifact import read_manifest
    m = read_manifest(folder)
    parity = m.parity
    return {"folder": str(folder), "model_file": m.model_file, "bytes": m.files[m.model_file].bytes,
            "export_seconds": m.export_seconds, "verified": parity is not None,
            "parity_passed": parity.passed if parity else None,
            "parity_max_abs": max(o.max_abs for o in parity.outputs.values()) if parity else None}


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def _progress(config: BenchConfig, models, runtimes, enabled: bool):
    """A tqdm bar on stderr counting the ceiling, exports, FLOP counts, every call, probes."""
    from tqdm import tqdm

    n_exports = len(models) * sum(rt in EXPORTED for rt in runtimes)
    per_block = (1 + config.warmup + config.runs) * len(models)
    total = 2 + n_exports + len(models) + len(runtimes) * len(config.seq_lens) * per_block \
        + (len(models) * len(runtimes) if config.memory else 0)
    return tqdm(total=total, file=sys.stderr, disable=not enabled, unit="step", dynamic_ncols=True)


@contextlib.contextmanager
def _workdir(path: str | None):
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    import tempfile
    with tempfile.TemporaryDirectory(prefix="sbexport-bench-") as tmp:
        yield Path(tmp)


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise SbexportError(f"--workdir {folder} exists and is not a folder")
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise SbexportError(f"--workdir {folder}: cannot create or write it ({existing} is not writable)")






def _str(path) -> str | None:
    return str(path) if path is not None else None


def _r(x, digits: int = 5) -> float:
    """`x` to `digits` significant digits: enough for any of these figures, short in the JSON."""
    return float(f"{float(x):.{digits}g}")
