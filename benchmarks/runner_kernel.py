"""The default .pte (every convolution in the XNNPACK delegate) against the opt-in one (`executorch
--grouped-conv runner-kernel`: the grouped convolutions outside it, run by sbexport's kernel
registered in the native runner), both timed by the native host runner (issue 10).

Interleaved A/B: each round starts the runner once per file (the order reversed every other
round), each start loading the program, running it once, then --runs timed runs at batch 1 and
--seq-len; the figures per file are the median and the fastest of every timed run (the fastest:
the run least disturbed by a shared machine), and the CPU time per forward (the difference of
two starts, of 1 + --runs and of 2 forwards, over --runs): at one thread the work of a forward,
which the other processes' load barely moves, where it moves wall time most. The opt-in runs
report --kernel-stats: the share
of their time spent in sbexport's kernel, in the grouped convolutions. With --etdump the default
file is profiled with ETDump in Python's runtime (benchmarks/et_profile.py): its grouped
convolutions inside XNNPACK, for the per-op comparison, and what it spends besides them.

    sbexport executorch --task mnli --random-init -o /tmp/pte-default
    sbexport executorch --task mnli --random-init --grouped-conv runner-kernel -o /tmp/pte-kernel
    python benchmarks/runner_kernel.py /tmp/pte-default /tmp/pte-kernel --threads 2 1 --etdump \\
        --json benchmarks/results/runner_kernel_x.json

On a shared machine the figures move with the other sessions' load (printed: load average
before and after): compare the two files within a run, not runs with each other.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from sbexport.artifact import read_manifest
from sbexport.bench.machine import load_average
from sbexport.targets.runner import NativeRunner, build_runner


def run(runner: NativeRunner, pte: Path, threads: int, seq: int, warmup: int, runs: int, out: Path | None = None):
    """One start of the runner on `pte` with --kernel-stats: its JSON report, with "cpu_s" added:
    the CPU time (user + system, every thread) the start took."""
    extra = ["--output-dir", out] if out else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = runner.run("--model", pte, "--seq-len", seq, "--threads", threads, "--warmup", warmup, "--runs", runs,
                      "--kernel-stats", *extra, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"error: {pte}: {proc.stderr.strip()}")
    report = json.loads(proc.stdout)
    report["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return report


def kernel_share(report: dict) -> tuple[float, int]:
    """(the share of a start's time spent in sbexport's kernel, its calls per forward). The
    counters cover every forward of the start; the bench starts the runner without warm-up, so
    those are the first run and the timed runs."""
    ours = report["kernels"]["ops"]["aten::convolution.out"]["sbexport"]
    return ours["ms"] / (report["first_run_ms"] + sum(report["run_ms"])), ours["calls"] // (1 + report["runs"])


def interleaved(runner, ptes: dict[str, Path], threads: int, args) -> dict:
    """Median timed run per file, the kernel's share, over args.rounds interleaved rounds."""
    times = {name: [] for name in ptes}
    cpu = {name: [] for name in ptes}
    kernel = []
    for r in range(args.rounds):
        for name in (list(ptes) if r % 2 == 0 else list(ptes)[::-1]):
            # CPU ms per forward: a start of 1 + runs forwards minus one of 2 (same load, same first run).
            short = run(runner, ptes[name], threads, args.seq_len, 0, 1)
            report = run(runner, ptes[name], threads, args.seq_len, 0, 1 + args.runs)
            cpu[name].append(1000 * (report["cpu_s"] - short["cpu_s"]) / args.runs)
            times[name] += report["run_ms"]
            if name == "runner-kernel":
                kernel.append(kernel_share(report))
    cpu_ms = {name: statistics.median(c) for name, c in cpu.items()}
    medians = {name: statistics.median(t) for name, t in times.items()}
    # The fastest run: the least disturbed by the other sessions of a shared machine.
    fastest = {name: min(t) for name, t in times.items()}
    return {"threads": threads, "median_ms": medians, "min_ms": fastest, "runs": {n: len(t) for n, t in times.items()},
            "ratio_default_over_kernel": medians["default"] / medians["runner-kernel"],
            "ratio_of_min": fastest["default"] / fastest["runner-kernel"],
            "cpu_ms_per_forward": cpu_ms, "ratio_of_cpu": cpu_ms["default"] / cpu_ms["runner-kernel"],
            "kernel_share": statistics.median(k for k, _ in kernel),
            "kernel_calls_per_forward": kernel[0][1]}


def outputs_agree(runner, ptes: dict[str, Path], seq: int) -> float:
    """Largest |default - runner-kernel| over the outputs, both run on the same made inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        got = {}
        for name, pte in ptes.items():
            report = run(runner, pte, 1, seq, 0, 1, Path(tmp) / name)
            got[name] = [np.load(o["file"]) for o in report["outputs"]]
    return max(float(np.abs(a - b).max()) for a, b in zip(got["default"], got["runner-kernel"]))


def etdump_split(folder: Path, threads: int, seq: int, runs: int) -> dict:
    """ETDump of the default file in Python's runtime: ms per forward of the whole method, of
    XNNPACK's grouped convolutions (its IGEMM convolutions; the ungrouped projection runs as a
    fully-connected GEMM), of the rest, and of the rest's parts: XNNPACK's transposes, the
    delegate calls' own overhead (a DELEGATE_CALL minus the XNNPACK operators in it) and the
    ops outside a delegate. (The opt-in file cannot be profiled this way: Python's runtime
    lacks sbexport's kernel and runs its grouped convolutions on the portable one, seconds each.)"""
    import torch

    from sbexport.bench.etdump import per_op, run_with_etdump
    from sbexport.threads import thread_settings

    manifest = read_manifest(folder)
    rng = np.random.default_rng(0)
    values = {"input_ids": rng.integers(1000, 2000, (1, seq)), "attention_mask": np.ones((1, seq)),
              "token_type_ids": np.zeros((1, seq))}
    inputs = [torch.from_numpy(values[name].astype(np.int64)) for name in manifest.inputs]
    with tempfile.TemporaryDirectory() as tmp, thread_settings(threads, executorch=True):
        run_with_etdump(folder / manifest.model_file, inputs, runs, Path(tmp) / "run.etdp")
        total, ops = per_op(Path(tmp) / "run.etdp")

    def summed(test) -> float:
        return sum(ms for name, (_, ms) in ops.items() if test(name))
    delegated = summed(lambda n: not n.startswith("outside:"))
    grouped = summed(lambda n: n.startswith("Convolution"))
    outside = summed(lambda n: n.startswith("outside:") and n not in ("outside:DELEGATE_CALL", "outside:OPERATOR_CALL"))
    return {"threads": threads, "method_ms": total, "grouped_convolutions_ms": grouped, "rest_ms": total - grouped,
            "delegate_calls": ops.get("outside:DELEGATE_CALL", [0, 0])[0],
            "delegate_overhead_ms": ops.get("outside:DELEGATE_CALL", [0, 0.0])[1] - delegated,
            "transposes_ms": summed(lambda n: n.startswith("Transpose")),
            "outside_ops_ms": outside, "dense_gemm_ms": summed(lambda n: n.startswith("Fully Connected"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("default", type=Path, help="artifact folder of the default export")
    parser.add_argument("kernel", type=Path, help="artifact folder of the --grouped-conv runner-kernel export")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per start")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--etdump", action="store_true", help="also profile the default file with ETDump")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if read_manifest(args.kernel).details.grouped_conv != "runner-kernel":
        sys.exit(f"error: {args.kernel} was not exported with --grouped-conv runner-kernel")
    runner = NativeRunner([str(build_runner("host"))])
    ptes = {"default": args.default / "model.pte", "runner-kernel": args.kernel / "model.pte"}
    result = {"seq_len": args.seq_len, "load_before": load_average(), "max_abs_difference":
              outputs_agree(runner, ptes, args.seq_len), "timings": [], "etdump": []}
    print(f"outputs: largest |default - runner-kernel| {result['max_abs_difference']:.2e}")
    for threads in args.threads:
        t = interleaved(runner, ptes, threads, args)
        result["timings"].append(t)
        print(f"{threads} thread(s), median (min): default {t['median_ms']['default']:.1f} "
              f"({t['min_ms']['default']:.1f}) ms, runner-kernel {t['median_ms']['runner-kernel']:.1f} "
              f"({t['min_ms']['runner-kernel']:.1f}) ms, default / kernel {t['ratio_default_over_kernel']:.2f}x "
              f"({t['ratio_of_min']:.2f}x); sbexport's kernel {t['kernel_share']:.0%} of the opt-in's time "
              f"(about {t['kernel_share'] * t['min_ms']['runner-kernel']:.1f} ms of its fastest run) in "
              f"{t['kernel_calls_per_forward']} grouped convolutions")
        cpu = t["cpu_ms_per_forward"]
        print(f"  CPU time per forward (every thread, median over rounds): default {cpu['default']:.1f} ms, "
              f"runner-kernel {cpu['runner-kernel']:.1f} ms (default / kernel {t['ratio_of_cpu']:.2f}x)")
        if args.etdump:
            e = etdump_split(args.default, threads, args.seq_len, args.runs * 2)
            result["etdump"].append(e)
            print(f"  ETDump of the default file: method {e['method_ms']:.1f} ms = grouped convolutions "
                  f"{e['grouped_convolutions_ms']:.1f} + rest {e['rest_ms']:.1f} (transposes {e['transposes_ms']:.1f}, "
                  f"{e['delegate_calls']} delegate calls' overhead {e['delegate_overhead_ms']:.1f}, other ops outside "
                  f"{e['outside_ops_ms']:.1f}, dense GEMMs {e['dense_gemm_ms']:.1f})")
    result["load_after"] = load_average()
    print(f"load average before {result['load_before']}, after {result['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
