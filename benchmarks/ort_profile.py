"""Where ONNX Runtime spends SqueezeBERT's time: its profiler, per op type, and where the
graph's Transpose nodes come from (issue 10, section 2, the first measured step).

Exports the full-size MNLI SqueezeBERT with random weights (or takes --artifact), runs it in
one ONNX Runtime session with the options every sbexport command uses (runtime.OnnxRunner:
intra-op threads, one inter-op thread, spinning off) plus profiling, and writes

    benchmarks/results/ort_profile_<date>.json   per op type: nodes, ms per run, share; the Conv
                                                 nodes per projection shape with their GFLOP/s in
                                                 the graph; the Transposes by (producer, perm,
                                                 consumers); the op counts of the exported and of
                                                 the optimized graph

Per node, the median of its kernel times over the runs is taken (robust to a busy machine),
then summed per op type.

    python benchmarks/ort_profile.py --seq-len 128 --runs 25
    python benchmarks/ort_profile.py --artifact artifacts/mnli-onnx --threads 1 --tag 1t
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def export_model(folder: Path) -> Path:
    """The full-size MNLI SqueezeBERT (random weights) exported to ONNX in `folder`, verified."""
    from sbexport.export import OnnxOptions, export_artifact
    from sbexport.source import resolve_source
    from sbexport.tasks import get_task

    task = get_task("mnli")
    source = resolve_source(task, random_init=True)
    return export_artifact("onnx", task, source, folder, OnnxOptions(), overwrite=True, verify=True, log=print)


def session(path: Path, threads: int, profile_prefix: str | None, optimized: Path | None):
    """An ONNX Runtime session with runtime.OnnxRunner's options, profiling when asked."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds(seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(1000, 30000, (1, seq), dtype=np.int64),
            "attention_mask": np.ones((1, seq), np.int64), "token_type_ids": np.zeros((1, seq), np.int64)}


def node_medians(profile: list[dict]) -> dict[str, tuple[str, float]]:
    """{node name: (op type, median kernel ms over the runs)} from the profiler's events."""
    times = defaultdict(list)
    for event in profile:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"].removesuffix("_kernel_time"), event["args"]["op_name"]].append(event["dur"])
    return {name: (op, statistics.median(durations) / 1e3) for (name, op), durations in times.items()}


def per_op_type(medians: dict[str, tuple[str, float]]) -> tuple[dict, float]:
    """({op type: {"nodes", "ms_per_run", "share"}}, total kernel ms per run)."""
    by_type = defaultdict(lambda: {"nodes": 0, "ms_per_run": 0.0})
    for op, ms in medians.values():
        by_type[op]["nodes"] += 1
        by_type[op]["ms_per_run"] += ms
    total = sum(v["ms_per_run"] for v in by_type.values())
    out = {op: {**v, "ms_per_run": round(v["ms_per_run"], 3), "share": round(v["ms_per_run"] / total, 4)}
           for op, v in sorted(by_type.items(), key=lambda kv: -kv[1]["ms_per_run"])}
    return out, total


def conv_by_shape(medians: dict[str, tuple[str, float]], model, seq: int) -> dict:
    """The Conv nodes' time per projection shape ('768x3072/g4', as `sbexport roofline` names
    them) and the GFLOP/s each reaches inside the whole graph (FLOPs: roofline.shapes)."""
    import onnx

    from sbexport.roofline.shapes import Projection

    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    out = defaultdict(lambda: {"nodes": 0, "ms_per_run": 0.0, "flops": 0})
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in medians:
            continue
        group = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        cout, fan_in = weights[node.input[1]][:2]
        shape = Projection(fan_in * group, cout, group, ())
        entry = out[shape.key]
        entry["nodes"] += 1
        entry["ms_per_run"] += medians[node.name][1]
        entry["flops"] += shape.flops(seq)
    return {k: {**v, "ms_per_run": round(v["ms_per_run"], 3), "gflops": round(v["flops"] / v["ms_per_run"] / 1e6, 1)}
            for k, v in out.items()}


def transposes(model) -> list[dict]:
    """The graph's Transpose nodes grouped by (the op producing their input, perm, the ops
    consuming their output): where each comes from."""
    import onnx

    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    consumers = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n.op_type)
    groups = Counter()
    for n in model.graph.node:
        if n.op_type == "Transpose":
            perm = next((list(onnx.helper.get_attribute_value(a)) for a in n.attribute if a.name == "perm"), None)
            groups[producer.get(n.input[0], "graph input"), str(perm),
                   ",".join(sorted(consumers[n.output[0]])) or "graph output"] += 1
    return [{"producer": p, "perm": perm, "consumers": c, "count": k} for (p, perm, c), k in groups.most_common()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", default=None, help="an ONNX artifact folder (default: export one)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--out", default=str(RESULTS), help="folder of the result file (made if missing)")
    parser.add_argument("--tag", default="", help="suffix of the result file of a variant run (e.g. 1t)")
    args = parser.parse_args(argv)
    import onnx

    with tempfile.TemporaryDirectory(prefix="sbexport-ort-profile-") as tmp:
        tmp = Path(tmp)
        folder = Path(args.artifact) if args.artifact else export_model(tmp / "mnli-onnx")
        path = folder / "model.onnx"
        inputs = feeds(args.seq_len)
        sess = session(path, args.threads, str(tmp / "profile"), tmp / "optimized.onnx")
        for _ in range(3):                                   # warm-up, in the profile too (medians)
            sess.run(None, inputs)
        walls = []
        for _ in range(args.runs):
            started = time.perf_counter()
            sess.run(None, inputs)
            walls.append((time.perf_counter() - started) * 1e3)
        profile = json.loads(Path(sess.end_profiling()).read_text())
        exported, optimized = onnx.load(str(path)), onnx.load(str(tmp / "optimized.onnx"))
        medians = node_medians(profile)
        ops, total = per_op_type(medians)
        result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "seq_len": args.seq_len,
                  "threads": args.threads, "runs": args.runs, "wall_ms_median": round(statistics.median(walls), 2),
                  "wall_ms_min": round(min(walls), 2), "kernel_ms_per_run": round(total, 2), "by_op_type": ops,
                  "conv_by_shape": conv_by_shape(medians, optimized, args.seq_len),
                  "exported_ops": dict(Counter(n.op_type for n in exported.graph.node).most_common()),
                  "optimized_ops": dict(Counter(n.op_type for n in optimized.graph.node).most_common()),
                  "transposes_exported": transposes(exported), "transposes_optimized": transposes(optimized),
                  "load_average": [round(x, 2) for x in os.getloadavg()]}
    out = Path(args.out) / f"ort_profile_{date.today().isoformat()}{'_' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)   # --out is a folder: make it, not fail after the run
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wall {result['wall_ms_median']} ms median, {result['wall_ms_min']} min; kernels {total:.1f} ms per run")
    for op, v in ops.items():
        print(f"  {op:<28}{v['nodes']:>5} nodes {v['ms_per_run']:>9.2f} ms {100 * v['share']:>6.1f}%")
    print("Conv per projection shape, GFLOP/s inside the graph:")
    for shape, v in result["conv_by_shape"].items():
        print(f"  {shape:<14}{v['nodes']:>4} nodes {v['ms_per_run']:>9.2f} ms {v['gflops']:>8.1f} GFLOP/s")
    print("Transposes in the optimized graph:")
    for t in result["transposes_optimized"]:
        print(f"  {t['count']:>3} x {t['producer']} -> Transpose{t['perm']} -> {t['consumers']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
