"""int8 against int8 on ONNX Runtime: SqueezeBERT fp32 and static int8 (sbexport's recipe) beside
BERT-base fp32 and BERT-base dynamic int8 (ONNX Runtime's standard recipe for it, per-channel
s8 weights on its MatMuls), batch 1, sequence 128, timed interleaved run by run in one process,
with the ratios and file sizes of issue 11's targets:

    SqueezeBERT int8 >= 2x faster than SqueezeBERT fp32, >= 2.5x faster than BERT-base int8;
    SqueezeBERT int8 file <= 30% of the fp32 file.

With --executorch, SqueezeBERT's fp32 XNNPACK program and its int8 program (sbexport's PT2E
recipe, export/quantize_executorch.py: every projection a quantized convolution inside the
delegate) are timed in the same interleaved rounds, through executorch's Python runtime, its
thread pool set to --threads; with --executorch-bert also BERT-base's int8 program with the
standard ExecuTorch recipe for Linear layers (XNNPACKQuantizer, dynamic per-channel int8 weights:
XNNPACK's qd8 x qc8w GEMMs).

Full-size models with random weights (latency and size do not depend on them; the accuracy
guard is the tests' job, on real weights), sbexport's own exports (MNLI head, max sequence
128). SqueezeBERT's int8 file is calibrated on the built-in sentences. Writes
benchmarks/results/int8_<date>.json.

    python benchmarks/int8_comparison.py                       # 40 runs, 2 threads
    python benchmarks/int8_comparison.py --runs 100 --workdir /tmp/int8-bench
    python benchmarks/int8_comparison.py --executorch --workdir /tmp/int8-bench
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


def build_executorch(workdir: Path) -> dict[str, Path]:
    """SqueezeBERT's fp32 XNNPACK program and its int8 program, made once into `workdir`."""
    from sbexport.artifact import open_artifact
    from sbexport.export import ExportWrapper, example_inputs
    from sbexport.export.quantize_executorch import lower_int8
    from sbexport.verify import rebuild_reference

    task = get_task("mnli")
    fp32 = workdir / "squeezebert-pte-fp32"
    if not fp32.exists():
        export_artifact("executorch", task, resolve_source(task, random_init=True), fp32, max_seq_len=SEQ,
                        verify=False)
    int8 = workdir / "squeezebert-int8.pte"
    if not int8.exists():
        model = rebuild_reference(fp32, open_artifact(fp32), task)
        tokenizer = SqueezeBertTokenizer.from_pretrained(fp32)
        feeds = list(encode_texts(task, tokenizer, read_texts(None).records, SEQ))
        example = example_inputs(task, model.config, batch=1, seq_len=8)
        lower_int8(ExportWrapper(model, task).eval(), example, SEQ, feeds, int8)
    return {"squeezebert pte fp32": fp32 / "model.pte", "squeezebert pte int8": int8}


def build_bert_pte_int8(workdir: Path) -> dict[str, Path]:
    """BERT-base's int8 XNNPACK program (dynamic per-channel Linear quantization), made once."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from sbexport.export import ExportWrapper, example_inputs
    from sbexport.export import executorch as executorch_format
    from sbexport.source import build_reference

    path = workdir / "bert-dynamic-int8.pte"
    if not path.exists():
        task = get_task("mnli")
        model = build_reference(task, resolve_source(task, random_init=True, arch="bert"))
        wrapper = ExportWrapper(model, task).eval()
        example = example_inputs(task, model.config, batch=1, seq_len=8)
        program = torch.export.export(wrapper, tuple(example.values()),
                                      dynamic_shapes=executorch_format._dynamic_shapes(example, SEQ))
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                                     is_dynamic=True))
        prepared = prepare_pt2e(program.module(), quantizer)
        prepared(*example.values())
        edge = executorch_format.lower(convert_pt2e(prepared), example, SEQ, "xnnpack")
        path.write_bytes(edge.to_executorch().buffer)
    return {"bert pte int8 (dynamic)": path}


def time_interleaved(files: dict[str, Path], runs: int, threads: int) -> dict[str, list[float]]:
    """Milliseconds per call of each file, batch 1 x SEQ tokens, one call of each in turn per
    round (ONNX Runtime's spinning off, so that an idle session does not take the cores of the
    next; a .pte runs on ExecuTorch's pool, which the caller sets)."""
    from sbexport.runtime import open_runner

    runners = {name: open_runner(path, INPUT_NAMES, threads) for name, path in files.items()}
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 30000, (1, SEQ)), "attention_mask": np.ones((1, SEQ), np.int64),
             "token_type_ids": np.zeros((1, SEQ), np.int64)}
    feeds = {k: np.asarray(v, dtype=np.int64) for k, v in feeds.items() if k in INPUT_NAMES}
    for runner in runners.values():       # warm-up: allocators, kernel selection
        for _ in range(3):
            runner.run(feeds)
    times = {name: [] for name in runners}
    for _ in range(runs):
        for name, runner in runners.items():
            started = time.perf_counter()
            runner.run(feeds)
            times[name].append((time.perf_counter() - started) * 1e3)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep the model files here and reuse them")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--executorch", action="store_true", help="time SqueezeBERT's .pte files too")
    parser.add_argument("--executorch-bert", action="store_true", help="and BERT-base's int8 .pte")
    args = parser.parse_args(argv)
    import tempfile

    from sbexport.threads import thread_settings

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        files = build(workdir)
        if args.executorch:
            files.update(build_executorch(workdir))
        if args.executorch and args.executorch_bert:
            files.update(build_bert_pte_int8(workdir))
        load_before = os.getloadavg()
        with thread_settings(args.threads, executorch=args.executorch):
            times = time_interleaved(files, args.runs, args.threads)
        sizes = {name: path.stat().st_size for name, path in files.items()}
    median = {name: float(np.median(t)) for name, t in times.items()}
    ratios = {"squeezebert fp32 / int8": median["squeezebert fp32"] / median["squeezebert int8"],
              "bert int8 / squeezebert int8": median["bert int8 (dynamic)"] / median["squeezebert int8"],
              "bert fp32 / bert int8": median["bert fp32"] / median["bert int8 (dynamic)"],
              "squeezebert int8 size / fp32 size": sizes["squeezebert int8"] / sizes["squeezebert fp32"]}
    if args.executorch:
        ratios.update({
            "pte: squeezebert fp32 / int8": median["squeezebert pte fp32"] / median["squeezebert pte int8"],
            "pte: bert int8 (onnx) / squeezebert int8": median["bert int8 (dynamic)"] / median["squeezebert pte int8"],
            "pte: squeezebert int8 size / fp32 size": sizes["squeezebert pte int8"] / sizes["squeezebert pte fp32"]})
    if "bert pte int8 (dynamic)" in median:
        ratios["pte: bert int8 / squeezebert int8"] = median["bert pte int8 (dynamic)"] / median["squeezebert pte int8"]
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
