"""The roofline's result as a terminal table, versioned JSON and a PNG plot.

The JSON is the result dict of run.run_roofline under schema "sbexport.roofline/1": keys schema,
created, sbexport_version, machine, config, method, ceilings, shapes, runtimes, rows, skipped.
Each row is one projection shape x runtime x sequence length. Every key is pinned in the JSON
Schema file shipped with the package, schema/roofline-1.json (json_schema()); tests validate
real output against it. A change that renames or removes a key bumps the version.
"""

from __future__ import annotations

import io
import json
import os

from ..bench.sgemm import LABELS, libraries_text
from ..reportfile import write_report

SCHEMA = "sbexport.roofline/1"
SCHEMA_FILE = "schema/roofline-1.json"     # inside this package; its "schema" property is SCHEMA
# What a row's op_* figures are (runtimes.XnnpackConvRun), for the table's legend.
OP_LEGEND = ("XNNPACK's convolution event alone (ETDump), without the transposes and reshapes the delegate "
             "puts around a lone convolution, which the model's [B, C, 1, S] layout does not pay")
OP_LEGENDS = {"executorch-per-group": "XNNPACK's convolution events of the groups (ETDump), summed, without the "
                                       "channel split outside the delegate and the transposes around it"}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a SCHEMA result, read from the package data."""
    from importlib.resources import files

    return json.loads(files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def write_json(result: dict, path: str | os.PathLike) -> None:
    """Write the result as indented JSON through reportfile.write_report."""
    write_report(path, json.dumps(result, indent=2) + "\n")


def table(result: dict) -> str:
    """GFLOP/s at the median and at the fastest call per shape x runtime (rows) and length
    (columns), then the share of the dense shape's rate for grouped shapes, then the ceilings
    and skipped runtimes. A runtime whose rows carry op_* fields (ExecuTorch) gets a row "<name>*"
    of its operator's own rate in the first table, and that operator's share in place of the
    whole call's in the third, with a legend line."""
    seqs = result["config"]["seq_lens"]
    by_key = {(r["shape"], r["runtime"], r["seq_len"]): r for r in result["rows"]}
    pairs = list(dict.fromkeys((r["shape"], r["runtime"]) for r in result["rows"]))
    timed_op = {rt for s, rt in pairs if "op_gflops" in by_key[s, rt, seqs[0]]}
    lines = []
    # (title, field, the op-timed runtimes' field, whether it replaces the whole call's row, format)
    for title, field, op_field, replaces, fmt in (
            ("GFLOP/s (median call)", "gflops", "op_gflops", False, "{:.1f}"),
            ("GFLOP/s (fastest call: nearer the capability on a busy machine)", "gflops_best", None, False, "{:.1f}"),
            ("% of the dense shape's GFLOP/s, same runtime and length", "pct_of_dense", "pct_of_dense_op", True,
             "{:.0f}%")):
        shown = []     # (shape, label, runtime, field)
        for s, rt in pairs:
            op = op_field is not None and rt in timed_op
            if not (op and replaces):
                shown.append((s, rt, rt, field))
            if op:
                shown.append((s, f"{rt}*", rt, op_field))
        shown = [row for row in shown if by_key[row[0], row[2], seqs[0]][row[3]] is not None]
        if not shown:
            continue
        width = max([12] + [len(label) + 1 for _, label, _, _ in shown])   # executorch-per-group* is 21
        head = f"{'shape':<14}{'runtime':<{width}}" + "".join(f"{'seq ' + str(s):>10}" for s in seqs)
        lines += [title, head, "-" * len(head)]
        lines += [f"{s:<14}{label:<{width}}" + "".join(f"{fmt.format(by_key[s, rt, q][f]):>10}" for q in seqs)
                  for s, label, rt, f in shown]
        lines.append("")
    for rt in sorted(timed_op):
        lines.append(f"{rt}*: {OP_LEGENDS.get(rt, OP_LEGEND)} (the whole call's share: pct_of_dense in the JSON)")
    if timed_op:
        lines.append("")
    threads = result["config"]["threads"]
    for roof in result["ceilings"]:
        mark = "  <- the run's threads" if roof["threads"] == threads else ""
        sgemm = roof["sgemm"]
        by = (f" (set by {LABELS.get(sgemm['library'], sgemm['library'])}; {libraries_text(sgemm)})"
              if libraries_text(sgemm) else "")
        lines.append(f"ceiling on {roof['threads']} thread(s): sgemm {sgemm['gflops']:.1f} GFLOP/s{by}, "
                     f"copy {roof['bandwidth']['gbytes_per_s']:.1f} GB/s{mark}")
    waits = [r["cpu_wait_pct"] for r in result["rows"] if r["cpu_wait_pct"] is not None]
    if waits:
        lines.append(f"CPU wait during the timed calls: {min(waits):.0f} to {max(waits):.0f}% of wall time "
                     f"(near 0 on a quiet machine; more means other work took the cores)")
    m = result["machine"]
    lines.append(f"FLOPs = {result['method']['flops']}; batch 1, {threads} threads, {result['config']['repeats']} "
                 f"timed calls; {m['cpu']}")
    lines += [f"skipped {s['runtime']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines)


def plot(result: dict, path: str | os.PathLike) -> None:
    """Roofline: GFLOP/s at the median call against arithmetic intensity (log-log), one line per
    shape x runtime through its sequence lengths, and each thread count's roof
    min(sgemm, bandwidth x intensity); PNG at `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = dict(zip(result["runtimes"], ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    markers = dict(zip((s["shape"] for s in result["shapes"]), "os^vDP"))
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    xs = [r["intensity"] for r in result["rows"]]
    grid = np.geomspace(min(xs) / 2, max(xs) * 2, 200)
    for roof, style in zip(result["ceilings"], (":", "--", "-")):
        sgemm, bw = roof["sgemm"]["gflops"], roof["bandwidth"]["gbytes_per_s"]
        ax.plot(grid, np.minimum(sgemm, bw * grid), style, color="black", linewidth=1,
                label=f"roof, {roof['threads']} thread(s): sgemm {sgemm:.0f} GFLOP/s, copy {bw:.0f} GB/s")
    for shape, rt in dict.fromkeys((r["shape"], r["runtime"]) for r in result["rows"]):
        rows = sorted((r for r in result["rows"] if r["shape"] == shape and r["runtime"] == rt),
                      key=lambda r: r["seq_len"])
        ax.plot([r["intensity"] for r in rows], [r["gflops"] for r in rows], "-", marker=markers.get(shape, "o"),
                color=colors.get(rt, "gray"), markersize=5, linewidth=1,
                label=f"{shape}, {result['runtimes'][rt]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte of least traffic); along each line: sequence "
                  + ", ".join(str(s) for s in result["config"]["seq_lens"]), fontsize=8)
    ax.set_ylabel("GFLOP/s (median call)")
    m, cfg = result["machine"], result["config"]
    ax.set_title(f"SqueezeBERT projections, batch 1, {cfg['threads']} threads, fp32 - {m['cpu']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_report(path, buffer.getvalue())
