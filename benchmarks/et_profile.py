"""Where ExecuTorch's time goes: the ETDump of a .pte run at batch 1, per XNNPACK operator
(the delegate's own per-op events) and per op run outside the delegate (issue 10, section 2).

Loads the program with ETDump on, runs `forward` --runs times on fixed inputs (random token ids,
full mask), then reads the dump with ExecuTorch's Inspector: per event the median of its runs,
summed per event name. XNNPACK names its operators by kind and position inside a delegate
("Convolution (NHWC, F32) IGEMM #2" is the second IGEMM convolution of each delegate that has
one); ops outside a delegate are prefixed "outside:".

    python benchmarks/et_profile.py /tmp/mnli-pte --threads 1 --runs 10
    python benchmarks/et_profile.py /tmp/mnli-pte --json results/et_profile_x.json

Time the shares, not the absolute figures, on a shared machine; the wait% printed is this
process's (sbexport bench's column).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from sbexport.artifact import read_manifest
from sbexport.bench.etdump import per_op, run_with_etdump
from sbexport.bench.machine import load_average
from sbexport.threads import thread_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an ExecuTorch artifact folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    manifest = read_manifest(args.folder)
    rng = np.random.default_rng(0)
    values = {"input_ids": rng.integers(1000, 2000, (1, args.seq_len)), "attention_mask": np.ones((1, args.seq_len)),
              "token_type_ids": np.zeros((1, args.seq_len))}
    inputs = [torch.from_numpy(values[name].astype(np.int64)) for name in manifest.inputs]
    with tempfile.TemporaryDirectory() as tmp, thread_settings(args.threads, executorch=True):
        load = load_average()
        wait = run_with_etdump(args.folder / manifest.model_file, inputs, args.runs, Path(tmp) / "run.etdp")
        total, ops = per_op(Path(tmp) / "run.etdp")
    print(f"{args.folder}: method {total:.1f} ms median, threads {args.threads}, wait {wait}%, load {load}")
    for name, (count, ms) in sorted(ops.items(), key=lambda kv: -kv[1][1]):
        if name != "outside:DELEGATE_CALL":
            print(f"  {ms:8.2f} ms {ms / total:6.1%} {count:4d}x  {name}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "seq_len": args.seq_len,
                                         "cpu_wait_pct": wait, "load_average": load, "method_ms": total,
                                         "ops": ops}, indent=1) + "\n")


if __name__ == "__main__":
    main()
