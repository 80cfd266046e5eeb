"""SqueezeBERT against BERT-base on this CPU, from nothing (the README's "Measured" section):
export both (full size, random weights: latency does not depend on them) to ONNX and
ExecuTorch, time them interleaved on PyTorch eager, ONNX Runtime and ExecuTorch, and write

    benchmarks/results/host_<date>.json   every figure (schema sbexport.bench/1)
    benchmarks/results/host_<date>.png    latency against sequence length
    benchmarks/results/host_table.md      the comparison table, as markdown

Run it on a quiet machine (`make bench`); a busy one shows in the JSON's load averages.

    python benchmarks/host_comparison.py                    # seq 8, 32, 128, 512; 20 runs
    python benchmarks/host_comparison.py --seq-lens 128 --runs 30
    python benchmarks/host_comparison.py --threads 1     # writes host_<date>_1t.* and host_table_1t.md
    python benchmarks/host_comparison.py --seq-lens 128 --runs 40 --tag seq128
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import date
from pathlib import Path

from sbexport.bench import BenchConfig, markdown_table, run_bench, table
from sbexport.cli import third_party_quiet
from sbexport.errors import SbexportError

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-lens", default="8,32,128,512")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--formats", default="eager,onnx,executorch")
    parser.add_argument("--workdir", default=None, help="keep the exports here and reuse them")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    parser.add_argument("--tag", default="", help="suffix of the result files of a variant run (default: "
                                                   "<n>t with --threads, none otherwise)")
    parser.add_argument("--from-json", default=None, metavar="PATH",
                        help="only rewrite the markdown table from an earlier run's JSON")
    parser.add_argument("--verbose", action="store_true", help="also show what the libraries underneath print")
    args = parser.parse_args(argv)
    with contextlib.nullcontext() if args.verbose else third_party_quiet():
        return run(args)


def run(args: argparse.Namespace) -> int:
    if args.from_json:
        path = Path(args.from_json)
        tag = path.stem.split("_", 2)[2] if path.stem.count("_") >= 2 else ""
        table_path = path.parent / f"host_table{'_' + tag if tag else ''}.md"
        table_path.write_text(table_page(json.loads(path.read_text()), path.stem), encoding="utf-8")
        print(f"wrote {table_path}")
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or (f"{args.threads}t" if args.threads else "")   # a variant run keeps its own files
    suffix = f"_{tag}" if tag else ""
    stem = out / f"host_{date.today().isoformat()}{suffix}"
    config = BenchConfig(seq_lens=tuple(int(s) for s in args.seq_lens.split(",")), runs=args.runs,
                         warmup=args.warmup, threads=args.threads, formats=tuple(args.formats.split(",")),
                         workdir=args.workdir)
    try:
        result = run_bench(config, json_path=f"{stem}.json", plot_path=f"{stem}.png")
    except SbexportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table_path = out / f"host_table{suffix}.md"
    table_path.write_text(table_page(result, stem.name), encoding="utf-8")
    print(table(result))
    print(f"wrote {stem}.json, {stem}.png, {table_path}")
    return 0


def table_page(result: dict, stem: str) -> str:
    """The markdown file: machine, the table per sequence length, what was skipped."""
    m = result["machine"]
    lines = [f"# SqueezeBERT vs BERT-base on the host CPU ({result['created'][:10]})", "",
             f"Machine: {m['cpu']} ({', '.join(f'{k} {v}' for k, v in m['cpu_id'].items())}), "
             f"{m['cores']} cores, flags {' '.join(m['flags'])}{', virtualised' if m['virtualised'] else ''}; "
             f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
             f"Load average (1, 5, 15 min) before / after the run: {m['load_average']} / {m['load_average_end']}; "
             f"CPU wait per row in the JSON (`cpu_wait_pct`) says whether other work took the cores.",
             f"Random weights, task {result['config']['task']}; {result['method']['verified']}.",
             f"Full figures (percentiles, load, first run, memory, FLOPs): `{stem}.json`; plot: `{stem}.png`.", "",
             markdown_table(result)]
    for s in result["skipped"]:
        lines.append(f"Not measured: {s['runtime']} / {s['model']}: {s['reason']}")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
