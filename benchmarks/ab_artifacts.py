"""Time two or more artifact folders of the same task against each other, interleaved: the
measurement behind each "before / after" of issue 10's performance record (benchmarks/NOTES.md).

Each round runs every folder once on the same fixed inputs (batch 1, random token ids, full
attention mask), the order reversed every other round, so that a drift of the machine (the
other sessions of a shared box) hits every folder alike. Per call it reads this process's
waiting time (Linux schedstat, as `sbexport bench`'s wait% column), so a round whose threads
waited for a core can be told apart: `quiet` is the median over the calls that waited < 3% of
their wall time. Outputs are compared with the first folder's before timing (a faster file
that computes something else is worth nothing).

    python benchmarks/ab_artifacts.py /tmp/onnx-before /tmp/onnx-after --threads 1 --rounds 40
    python benchmarks/ab_artifacts.py a-pte b-pte --threads 2 --json results/ab_x.json

Folders hold ONNX (runtime.OnnxRunner, sbexport's session options) or ExecuTorch programs
(runtime.ExecuTorchRunner, on ExecuTorch's pool set to --threads).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sbexport.artifact import read_manifest
from sbexport.bench.machine import cpu_wait_pct, load_average, scheduler_times
from sbexport.threads import thread_settings

QUIET_WAIT_PCT = 3.0   # a call whose threads waited less than this share of its wall time


def feeds(manifest, seq: int) -> dict[str, np.ndarray]:
    """Fixed inputs for the manifest's input names: ids 1000..1999, mask 1, token types 0."""
    rng = np.random.default_rng(0)
    values = {"input_ids": rng.integers(1000, 2000, (1, seq)), "attention_mask": np.ones((1, seq)),
              "token_type_ids": np.zeros((1, seq))}
    return {name: values[name].astype(np.int64) for name in manifest.inputs}


def open_runner(folder: Path, threads: int, seq: int):
    """A no-argument callable running the folder's model on its fixed inputs: its outputs."""
    manifest = read_manifest(folder)
    inputs = feeds(manifest, seq)
    if manifest.format == "onnx":
        from sbexport.runtime import OnnxRunner
        runner = OnnxRunner(folder / manifest.model_file, threads)
    else:
        from sbexport.runtime import ExecuTorchRunner
        runner = ExecuTorchRunner(folder / manifest.model_file, tuple(inputs))
    return lambda: runner.run(inputs)


def time_rounds(runs: dict, rounds: int) -> dict:
    """{name: (ms per call, wait % per call)} over `rounds` interleaved rounds."""
    out = {name: ([], []) for name in runs}
    names = list(runs)
    for k in range(rounds):
        for name in names if k % 2 == 0 else names[::-1]:
            before, start = scheduler_times(), time.perf_counter_ns()
            runs[name]()
            wall = time.perf_counter_ns() - start
            after = scheduler_times()
            out[name][0].append(wall / 1e6)
            out[name][1].append(100 * (after[1] - before[1]) / wall if before and after else float("nan"))
    return out


def summary(times: dict) -> dict:
    """Per folder: p50, p10, min, the median of its quiet calls, each against the first folder."""
    first = float(np.median(times[next(iter(times))][0]))
    rows = {}
    for name, (ms, waits) in times.items():
        ms, waits = np.array(ms), np.array(waits)
        quiet = ms[waits < QUIET_WAIT_PCT]
        rows[name] = {"p50_ms": round(float(np.median(ms)), 2), "p10_ms": round(float(np.percentile(ms, 10)), 2),
                      "min_ms": round(float(ms.min()), 2), "ratio_p50": round(float(np.median(ms)) / first, 3),
                      "wait_pct_p50": round(float(np.median(waits)), 1), "quiet_calls": int(len(quiet)),
                      "quiet_p50_ms": round(float(np.median(quiet)), 2) if len(quiet) else None}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with thread_settings(args.threads, executorch=True):
        runs = {str(f): open_runner(f, args.threads, args.seq_len) for f in args.folders}
        reference = runs[str(args.folders[0])]()
        diffs = {name: max(float(np.abs(a - b).max()) for a, b in zip(run(), reference)) for name, run in runs.items()}
        for run in runs.values():
            for _ in range(3):
                run()
        load_before, sched, wall = load_average(), scheduler_times(), time.perf_counter_ns()
        times = time_rounds(runs, args.rounds)
        result = {"threads": args.threads, "rounds": args.rounds, "seq_len": args.seq_len,
                  "cpu_wait_pct": cpu_wait_pct(sched, wall), "load_average": [load_before, load_average()],
                  "max_abs_diff_vs_first": diffs, "folders": summary(times)}
    print(f"threads {args.threads}, {args.rounds} rounds, seq {args.seq_len}: wait {result['cpu_wait_pct']}%, "
          f"load {result['load_average']}")
    for name, row in result["folders"].items():
        print(f"  {name}: {row} (max |diff| vs first {diffs[name]:.2e})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
