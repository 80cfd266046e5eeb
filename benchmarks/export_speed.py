"""Time the full-size MNLI export of SqueezeBERT (and BERT-base) to ONNX and ExecuTorch on this
machine, against the targets: ONNX under 20 s, ExecuTorch under 60 s. Writes
benchmarks/results/export_speed.json.

`seconds` is the whole export_artifact call without verification (build the model, trace,
convert, save, write the folder); `exporter_seconds` is the format's own step as the manifest
records it; `verify_seconds` is the parity sweep run afterwards, reported apart. `cpu_seconds` is the
CPU time this process used during the export (all its threads): on a machine shared with other
work, wall time grows but CPU time barely does, so it shows how much of the wall time was waiting.

    python benchmarks/export_speed.py
    python benchmarks/export_speed.py --models squeezebert --formats onnx
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from sbexport.artifact import read_manifest
from sbexport.bench.machine import load_average, machine_info
from sbexport.cli import third_party_quiet
from sbexport.errors import SbexportError
from sbexport.export import export_artifact
from sbexport.source import resolve_source
from sbexport.tasks import get_task
from sbexport.verify import verify_folder

TARGETS_S = {"onnx": 20.0, "executorch": 60.0}
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="squeezebert,bert")
    parser.add_argument("--formats", default="onnx,executorch")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity sweep after each export")
    parser.add_argument("--out", default=str(RESULTS / "export_speed.json"))
    parser.add_argument("--verbose", action="store_true", help="also show what the libraries underneath print")
    args = parser.parse_args(argv)
    with contextlib.nullcontext() if args.verbose else third_party_quiet():
        return run(args)


def run(args: argparse.Namespace) -> int:
    task = get_task("mnli")
    record = {"schema": "sbexport.export_speed/1", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(threads=0), "targets_s": TARGETS_S, "exports": []}
    with tempfile.TemporaryDirectory(prefix="sbexport-export-speed-") as tmp:
        for arch in args.models.split(","):
            source = resolve_source(task, random_init=True, arch=arch)
            for fmt in args.formats.split(","):
                print(f"exporting {arch} to {fmt}" + (", then verifying it" if not args.no_verify else ""), flush=True)
                record["exports"].append(time_one(fmt, task, source, Path(tmp) / f"{arch}-{fmt}", not args.no_verify))
    record["machine"]["load_average_end"] = load_average()
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for e in record["exports"]:
        if "error" in e:
            print(f"{e['model']:<12}{e['format']:<11} FAILED: {e['error']}")
            continue
        verdict = "within" if e["within_target"] else "OVER"
        print(f"{e['model']:<12}{e['format']:<11}{e['seconds']:>7.1f} s ({verdict} the {e['target_s']:.0f} s target; "
              f"CPU {e['cpu_seconds']:.1f} s, exporter {e['exporter_seconds']:.1f} s, "
              f"verify {e['verify_seconds'] or 0:.1f} s, "
              f"{e['file_bytes'] / 1e6:.0f} MB)")
    print(f"wrote {args.out}")
    return 0


def time_one(fmt: str, task, source, folder: Path, verify: bool) -> dict:
    entry = {"model": source.arch, "format": fmt, "target_s": TARGETS_S[fmt]}
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        export_artifact(fmt, task, source, folder, verify=False, log=lambda msg: None)
    except SbexportError as e:
        return {**entry, "error": str(e), "seconds": round(time.perf_counter() - started, 2)}
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    manifest = read_manifest(folder)
    entry.update(seconds=round(seconds, 2), cpu_seconds=round(cpu_seconds, 2),
                 exporter_seconds=manifest.export_seconds, within_target=seconds < TARGETS_S[fmt],
                 file_bytes=manifest.files[manifest.model_file].bytes,
                 verify_seconds=None, parity_max_abs=None)
    if verify:
        started = time.perf_counter()
        report = verify_folder(folder, log=lambda msg: None)
        entry.update(verify_seconds=round(time.perf_counter() - started, 2), parity_passed=report.passed,
                     parity_max_abs=max(o.max_abs for o in report.outputs.values()))
    return entry


if __name__ == "__main__":
    sys.exit(main())
