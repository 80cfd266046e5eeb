"""The benchmark as a pipeline over a target (target.Target; the host by default):

    check the inputs (inputs.check)      -> task, threads, models; before any work
    plan the steps (progress.plan)       -> the progress bar's total
    measure the ceiling (target)         -> the fp32 matrix-multiply rate, before the work
    export (cache.export_cached)         -> one verified artifact per model and runtime
    count FLOPs (flops.model_flops)      -> per model and length, on the eager graph
    time (target sessions)               -> one runtime at a time: load both models, then time
                                            them interleaved at each length
    peak memory (target.peak_memory)     -> per model and runtime, in a fresh process
    measure the ceiling again (target)   -> the better of the two is kept
    rows and report (rows, notes, report)

    run_bench(BenchConfig(...), json_path=..., plot_path=...) -> result dict (report.SCHEMA)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..reportfile import check_report_paths, write_reports
from . import report
from .cache import artifact_info, export_cached, quiet, work_folder
from .flops import model_flops
from .inputs import BenchConfig, Inputs, check
from .notes import method_notes
from .progress import Progress, open_progress, plan
from .rows import build_rows
from .target import Target, feeds_for


def run_bench(config: BenchConfig, *, json_path: str | None = None, plot_path: str | None = None,
              progress: bool = True, log: Callable[[str], None] | None = None,
              target: Target | None = None, verbose: bool = False) -> dict:
    """Benchmark on `target` (None: this host), write the JSON and PNG when asked, and return
    the result (report.SCHEMA). `log` gets the run's lines (None: above the progress bar); the
    exports' own lines (notes, parity tables) only when `verbose`, their warnings always.

    Raises SbexportError before any work for bad input: an unknown task, format or model, a
    checkpoint or config file that does not exist, a sequence length above a model's maximum,
    runs < 1, an unwritable output path, --json and --plot naming one file. A runtime the
    target cannot run is skipped with its reason. Raises ExportError when an export fails
    (cache.export_cached), and ReportsNotWritten (carrying the result) when the JSON or the
    plot could not be written (the other is written all the same). The target is closed when
    the run ends, whether it failed or not.
    """
    if target is None:
        from .host import HostTarget
        target = HostTarget()
    try:
        inputs = check(config, target.cores())
        check_report_paths({"--json": json_path, "--plot": plot_path})    # "" too: refused, not ignored
        result = _measure(config, inputs, target, progress, log, verbose)
    finally:
        target.close()
    write_reports(result, [(json_path, report.write_json), (plot_path, report.plot)])
    return result


def _measure(config: BenchConfig, inputs: Inputs, target: Target, progress_bar: bool, log, verbose: bool) -> dict:
    """Every measurement of the run, assembled into the result dict."""
    task, threads, models = inputs.task, inputs.threads, inputs.models
    skipped = [{"runtime": rt, "model": "*", "reason": why} for rt in config.formats
               if (why := target.unavailable(rt))]
    runtimes = [rt for rt in config.formats if not any(s["runtime"] == rt for s in skipped)]
    machine = target.describe(threads)          # before the work: its load average is the others'
    with open_progress(plan(config, models, runtimes), progress_bar) as bar, work_folder(config.workdir) as workdir:
        say = log or bar.write
        export_say = say if verbose else quiet(say)     # an export's notes are the export command's
        for _ in bar.steps("ceiling_start"):
            first_ceiling = target.ceiling(threads, config.sgemm_size, workdir)
        artifacts = {(s.model.arch, s.runtime):
                     export_cached(s.runtime, task, s.model, config, workdir, say, export_say)
                     for s in bar.steps("export")}
        flops = {s.model.arch: model_flops(task, s.model, config.batch, config.seq_lens) for s in bar.steps("flops")}
        loads, timings = {}, {}
        for rt in runtimes:
            _time_runtime(target, task, rt, config, threads, artifacts, bar, loads, timings)
        peaks = {(s.model.arch, s.runtime): target.peak_memory(task, s.runtime, s.model,
                                                               artifacts.get((s.model.arch, s.runtime)),
                                                               config.seq_lens, config.batch, threads)
                 for s in bar.steps("memory")}
        for _ in bar.steps("ceiling_end"):
            ceiling = best_ceiling(first_ceiling, target.ceiling(threads, config.sgemm_size, workdir))
        artifact_facts = {f"{arch}/{rt}": artifact_info(folder) for (arch, rt), folder in artifacts.items()}
    return {
        "schema": report.SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sbexport_version": __version__,
        "machine": {**machine, "load_average_end": target.load_average()},
        "config": _config_facts(config, inputs),
        "method": method_notes(config, target.notes(config)),
        "ceiling": ceiling,
        "artifacts": artifact_facts,
        "rows": build_rows(runtimes, models, config, threads, loads, timings, flops,
                           {k: v for k, v in peaks.items() if v is not None}, ceiling),
        "skipped": skipped,
    }


def _time_runtime(target: Target, task, runtime: str, config: BenchConfig, threads: int, artifacts: dict,
                  bar: Progress, loads: dict, timings: dict) -> None:
    """Load every model on `runtime` in one session, then time them together at each length.
    Fills loads[(arch, runtime)] (target.Loaded) and timings[(arch, runtime, seq_len)] (Timing)."""
    with target.session(task, runtime, threads) as session:
        loaded, configs = [], {}
        for step in bar.steps("load", runtime):
            m = step.model
            loaded.append(session.load(m, _path(artifacts.get((m.arch, runtime)))))
            loads[m.arch, runtime], configs[m.arch] = loaded[-1], m.config
        for step in bar.steps("time", runtime):
            feeds = {arch: feeds_for(task, cfg, config.batch, step.seq_len) for arch, cfg in configs.items()}
            for arch, timing in session.time(loaded, feeds, config.warmup, config.runs).items():
                timings[arch, runtime, step.seq_len] = timing


def best_ceiling(start: dict, end: dict) -> dict:
    """The ceiling is what the machine can do, so the better of the run's two measurements
    (before the exports and after the timing); both are kept, their gap shows the drift."""
    best = max(start, end, key=lambda c: c["gflops"])
    return {**best, "start_gflops": start["gflops"], "end_gflops": end["gflops"],
            "cpu_wait_pct": [start["cpu_wait_pct"], end["cpu_wait_pct"]],
            "op": best["op"] + ", measured before the exports and after the timing, the better kept"}


def _config_facts(config: BenchConfig, inputs: Inputs) -> dict:
    """The report's "config": the options as run. config_overrides records, per random-init
    model, the fields of its config that differ from the public architecture's (a custom size
    given with --config-ARCH), {} for the public size."""
    from ..source import random_init_config

    overrides = {}
    for m in inputs.models:
        if m.build_config is not None:
            public = random_init_config(inputs.task, m.arch).to_dict()
            changed = {k: v for k, v in m.build_config.to_dict().items() if public.get(k) != v}
            if changed:
                overrides[m.arch] = changed
    skip = ("checkpoints", "workdir", "configs")
    return {**{k: v for k, v in asdict(config).items() if k not in skip},
            "seq_lens": list(config.seq_lens), "formats": list(config.formats), "models": list(config.models),
            "threads": inputs.threads, "config_overrides": overrides,
            "sources": {m.arch: m.source.to_dict() for m in inputs.models}}


def _path(folder) -> Path | None:
    return Path(folder) if folder is not None else None
