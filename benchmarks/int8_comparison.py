"""int8 against int8 on ONNX Runtime: SqueezeBERT fp32 and static int8 (sbexport's recipe) beside
BERT-base fp32 and BERT-base dynamic int8 (ONNX Runtime's standard recipe for it, per-channel
s8 weights on its MatMuls), batch 1, sequence 128, timed interleaved run by run in one process,
with the ratios and file sizes of issue 11's targets:

    SqueezeBERT int8 >= 2x faster than SqueezeBERT fp32, >= 2.5x faster than BERT-base int8;
    SqueezeBERT int8 file <= 30% of the fp32 file.

Full-size models with random weights (latency and size do not depend on them; the accuracy
guard is the tests' job, on real weights), sbexport's own exports (MNLI head, max sequence
128). SqueezeBERT's int8 file is calibrated on the built-in sentences. Writes
benchmarks/results/int8_<date>.json.

    python benchmarks/int8_comparison.py                       # 40 runs, 2 threads
    python benchmarks/int8_comparison.py --runs 100 --workdir /tmp/int8-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from sbexport.export import export_artifact
from sbexport.export.quantize import RECIPES, encode_texts, quantize_onnx, read_texts
from sbexport.source import resolve_source
from sbexport.tasks import INPUT_NAMES, get_task
from sbexport.tokenizer import SqueezeBertTokenizer

RESULTS = Path(__file__).resolve().parent / "results"
SEQ = 128


def build(workdir: Path) -> dict[str, Path]:
    """The four model files, exported and quantized once into `workdir` (reused when there)."""
    task = get_task("mnli")
    files = {}
    for arch in ("squeezebert", "bert"):
        folder = workdir / f"{arch}-fp32"
        if not folder.exists():
            export_artifact("onnx", task, resolve_source(task, random_init=True, arch=arch), folder,
                            max_seq_len=SEQ, verify=False)
        files[f"{arch} fp32"] = folder / "model.onnx"
    sq_int8, bert_int8 = workdir / "squeezebert-int8.onnx", workdir / "bert-dynamic-int8.onnx"
    if not sq_int8.exists():
        tokenizer = SqueezeBertTokenizer.from_pretrained(workdir / "squeezebert-fp32")
        feeds = list(encode_texts(task, tokenizer, read_texts(None).records, SEQ))
        quantize_onnx(files["squeezebert fp32"], sq_int8, RECIPES["static"], feeds)
    if not bert_int8.exists():
        quantize_onnx(files["bert fp32"], bert_int8, RECIPES["dynamic"], None)
    files["squeezebert int8"], files["bert int8 (dynamic)"] = sq_int8, bert_int8
    return files


def time_interleaved(files: dict[str, Path], runs: int, threads: int) -> dict[str, list[float]]:
    """Milliseconds per call of each file, batch 1 x SEQ tokens, one call of each in turn per
    round (spinning off, so that an idle session does not take the cores of the next)."""
    import onnxruntime as ort

    sessions = {}
    for name, path in files.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 30000, (1, SEQ)), "attention_mask": np.ones((1, SEQ), np.int64),
             "token_type_ids": np.zeros((1, SEQ), np.int64)}
    feeds = {k: np.asarray(v, dtype=np.int64) for k, v in feeds.items() if k in INPUT_NAMES}
    for session in sessions.values():       # warm-up: allocators, kernel selection
        for _ in range(3):
            session.run(None, feeds)
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feeds)
            times[name].append((time.perf_counter() - started) * 1e3)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep the model files here and reuse them")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        files = build(workdir)
        load_before = os.getloadavg()
        times = time_interleaved(files, args.runs, args.threads)
        sizes = {name: path.stat().st_size for name, path in files.items()}
    median = {name: float(np.median(t)) for name, t in times.items()}
    ratios = {"squeezebert fp32 / int8": median["squeezebert fp32"] / median["squeezebert int8"],
              "bert int8 / squeezebert int8": median["bert int8 (dynamic)"] / median["squeezebert int8"],
              "bert fp32 / bert int8": median["bert fp32"] / median["bert int8 (dynamic)"],
              "squeezebert int8 size / fp32 size": sizes["squeezebert int8"] / sizes["squeezebert fp32"]}
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "batch": 1, "sequence": SEQ, "threads": args.threads, "runs": args.runs,
              "median_ms": median, "p10_ms": {k: float(np.percentile(t, 10)) for k, t in times.items()},
              "p90_ms": {k: float(np.percentile(t, 90)) for k, t in times.items()},
              "bytes": sizes, "ratios": ratios}
    for name in files:
        print(f"{name:<22} median {median[name]:7.1f} ms  p10 {result['p10_ms'][name]:7.1f}  "
              f"p90 {result['p90_ms'][name]:7.1f}  {sizes[name] / 1e6:7.1f} MB")
    for name, value in ratios.items():
        print(f"{name:<36} {value:.2f}")
    print(f"load average before / after: {result['load_average_before']} / {result['load_average_after']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"int8_{date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
