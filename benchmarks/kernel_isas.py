"""GFLOP/s of kernels/ per ISA path, shape and thread count, without Python in the timed call.

Builds kernels/ (cached) and runs its driver's `bench` (sbk_driver: the best of `repeats` calls
after one warm call, random data, batch 1) for every ISA this CPU runs, every SqueezeBERT
projection shape and each thread count, in `rounds` interleaved rounds (every ISA and thread
count once per round, so a drift of a loaded machine hits them alike); the best round is kept.
Writes benchmarks/results/kernel_isas_<date>.json and prints a table.

    python benchmarks/kernel_isas.py
    python benchmarks/kernel_isas.py --seq 128 --threads 1,2 --rounds 5 --repeats 40
"""

from __future__ import annotations

import argparse
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from sbexport.bench.machine import load_average, machine_info
from sbexport.kernels import ISAS, build_kernels, load
from sbexport.roofline import projections

RESULTS = Path(__file__).resolve().parent / "results"


def bench(driver: Path, isa: str, threads: int, shape, seq: int, repeats: int) -> float:
    """GFLOP/s of the driver's best call (its stdout: "<gflops> GFLOP/s (<us> us)")."""
    args = [ISAS[isa], threads, shape.cin, shape.cout, shape.groups, seq, repeats]
    done = subprocess.run([str(driver), "bench", *map(str, args)], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    folder = build_kernels("host")
    lib = load(folder / "libsbexport_kernels.so")
    isas = [isa for isa in ISAS if isa not in ("auto", "scalar") and lib.available(isa)]
    threads = [int(t) for t in args.threads.split(",")]
    best: dict[tuple, float] = {}
    load_start = load_average()
    for _ in range(args.rounds):
        for shape in projections():
            for isa in isas:
                for t in threads:
                    key = (shape.key, isa, t)
                    best[key] = max(best.get(key, 0.0), bench(folder / "sbk_driver", isa, t, shape, args.seq,
                                                              args.repeats))
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_info(max(threads)), "load_average_start": load_start,
                    "load_average_end": load_average()},
        "method": f"sbk_driver bench: best of {args.repeats} calls after one warm call, batch 1, seq {args.seq}, "
                  f"best of {args.rounds} interleaved rounds; FLOPs 2 x cin x cout / groups x seq",
        "rows": [{"shape": s, "isa": i, "threads": t, "gflops": g} for (s, i, t), g in best.items()],
    }
    path = RESULTS / f"kernel_isas_{datetime.now(timezone.utc):%Y-%m-%d}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    for (s, i, t), g in best.items():
        print(f"{s:12} {i:7} {t} thread(s) {g:7.1f} GFLOP/s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
