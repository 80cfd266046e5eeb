"""sbexport's ONNX export against optimum-onnx's export of the same weights, in ONNX Runtime:
the measurement behind issue 10's goal "ONNX Runtime >= 1.25x faster than the optimum-onnx
export" (benchmarks/NOTES.md).

optimum-onnx pins an older transformers than sbexport's, so it lives in its own environment,
made by `make optimum-env` (build/optimum/); this script only calls that environment's python.

    python benchmarks/optimum_comparison.py [--model DIR] [--threads 2] [--rounds 40] \
        [--optimum-python build/optimum/bin/python] [--json results/optimum_x.json] [--keep DIR]

1. The checkpoint: --model (a SqueezeBERT MNLI folder), or a full-size one with seeded random
   weights saved by sbexport's save_pretrained (transformers' own format and names).
2. optimum's export: `python -m optimum.exporters.onnx --model DIR --task text-classification`.
3. sbexport's export of the same folder (`sbexport onnx --task mnli --model DIR`, verified).
4. Both files through runtime.OnnxRunner (sbexport's session options) on the same inputs,
   interleaved call by call (ab_artifacts.time_rounds, the order reversed every round); the
   logits are compared first (a faster file that computes something else is worth nothing).
Prints the ratio and each graph's op counts; --json keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from ab_artifacts import summary, time_rounds

from sbexport.bench.machine import cpu_wait_pct, load_average, scheduler_times

OPTIMUM_PYTHON = Path(__file__).resolve().parents[1] / "build" / "optimum" / "bin" / "python"


def random_checkpoint(folder: Path, seed: int) -> Path:
    """A full-size SqueezeBERT MNLI classifier with seeded random weights, saved with the
    bert-base-uncased vocab.txt when installed (optimum's exporter copies a tokenizer it finds)."""
    import shutil

    import torch

    from sbexport.checkpoints import save_pretrained
    from sbexport.config import SqueezeBertConfig
    from sbexport.source import bundled_vocab_folder
    from sbexport.tasks import TASKS

    task = TASKS["mnli"]
    torch.manual_seed(seed)
    model = task.model_class()(SqueezeBertConfig(**task.config_overrides())).eval()
    save_pretrained(model, folder)
    if bundled_vocab_folder():
        shutil.copy(bundled_vocab_folder() / "vocab.txt", folder / "vocab.txt")
    return folder


def optimum_export(python: Path, model: Path, out: Path) -> Path:
    """Run optimum-onnx's exporter in its own environment; the .onnx path. Raises SystemExit
    with its output's tail when it fails."""
    cmd = [str(python), "-m", "optimum.exporters.onnx", "--model", str(model),
           "--task", "text-classification", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (out / "model.onnx").is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        sys.exit(f"optimum's export failed ({' '.join(cmd)}):\n{tail}")
    return out / "model.onnx"


def sbexport_export(model: Path, out: Path) -> Path:
    """sbexport's verified ONNX export of the same folder; the .onnx path."""
    from sbexport.artifact import read_manifest
    from sbexport.export import export_artifact
    from sbexport.source import resolve_source
    from sbexport.tasks import TASKS

    task = TASKS["mnli"]
    export_artifact("onnx", task, resolve_source(task, model=str(model)), out, None, log=lambda _: None)
    return out / read_manifest(out).model_file


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    return dict(Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node).most_common())


def feeds(seq: int) -> dict[str, np.ndarray]:
    """Fixed inputs: ids 1000..1999, full mask, token types 0, batch 1."""
    ids = np.random.default_rng(0).integers(1000, 2000, (1, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def compare(files: dict[str, Path], threads: int, rounds: int, seq: int) -> dict:
    """Interleaved timing of the files on the same inputs, after checking their logits agree."""
    from sbexport.runtime import OnnxRunner

    inputs = feeds(seq)
    runners = {name: OnnxRunner(path, threads) for name, path in files.items()}
    runs = {name: (lambda r=r: r.run(inputs)) for name, r in runners.items()}
    logits = {name: run()[0] for name, run in runs.items()}
    first = next(iter(logits.values()))
    diffs = {name: float(np.abs(value - first).max()) for name, value in logits.items()}
    for run in runs.values():
        for _ in range(3):
            run()
    load_before, sched, wall = load_average(), scheduler_times(), time.perf_counter_ns()
    times = time_rounds(runs, rounds)
    return {"threads": threads, "rounds": rounds, "seq_len": seq, "cpu_wait_pct": cpu_wait_pct(sched, wall),
            "load_average": [load_before, load_average()], "max_abs_logit_diff_vs_first": diffs,
            "files": summary(times), "ops": {name: op_counts(path) for name, path in files.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a SqueezeBERT MNLI checkpoint folder (default: random, full size)")
    parser.add_argument("--optimum-python", type=Path, default=OPTIMUM_PYTHON)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="export into this folder and keep both files "
                        "(e.g. for benchmarks/ort_profile.py --artifact KEEP/optimum)")
    args = parser.parse_args()
    if not args.optimum_python.is_file():
        sys.exit(f"no optimum environment at {args.optimum_python}: run `make optimum-env` first")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):   # the exports would refuse it
        sys.exit(f"--keep {args.keep} already holds files: remove it or choose another folder")
    with tempfile.TemporaryDirectory(prefix="sbexport-optimum-") as scratch:
        tmp = args.keep or Path(scratch)
        model = args.model or random_checkpoint(tmp / "checkpoint", args.seed)
        print(f"checkpoint: {model}", flush=True)
        files = {"optimum-onnx": optimum_export(args.optimum_python, model, tmp / "optimum"),
                 "sbexport": sbexport_export(model, tmp / "sbexport")}
        result = compare(files, args.threads, args.rounds, args.seq_len)
    print(f"threads {args.threads}, {args.rounds} rounds, seq {args.seq_len}: wait {result['cpu_wait_pct']}%, "
          f"load {result['load_average']}")
    for name, row in result["files"].items():
        print(f"  {name}: {row} (max |logit diff| vs optimum {result['max_abs_logit_diff_vs_first'][name]:.2e})")
    speedup = result["files"]["optimum-onnx"]["p50_ms"] / result["files"]["sbexport"]["p50_ms"]
    print(f"sbexport is {speedup:.3f}x the speed of optimum-onnx's export (goal >= 1.25x)")
    result["sbexport_speedup_p50"] = round(speedup, 3)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
