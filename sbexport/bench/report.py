"""The benchmark's result as a terminal table, a markdown table, versioned JSON and a PNG plot.

The JSON is the result dict of pipeline.run_bench under schema "sbexport.bench/1": keys schema,
created, sbexport_version, machine, config, method, ceiling, artifacts, rows, skipped. Each row
is one model x runtime x sequence length. Every key is pinned in a JSON Schema file shipped
with the package, schema/bench-1.json (json_schema()); tests validate real output against it.
A change that renames or removes a key bumps the version; a key added goes into that file.
"""

from __future__ import annotations

import io
import json
import os
import textwrap

from ..reportfile import write_report
from .inputs import INT8_RUNTIMES
from .sgemm import libraries_text

SCHEMA = "sbexport.bench/1"
SCHEMA_FILE = "schema/bench-1.json"      # inside this package; its "schema" property is SCHEMA
LABELS = {"squeezebert": "SqueezeBERT", "bert": "BERT-base"}
FAMILIES = {"squeezebert": "SqueezeBERT", "bert": "BERT"}      # a model at a size of the user's
RUNTIME_LABELS = {"eager": "PyTorch eager", "onnx": "ONNX Runtime", "executorch": "ExecuTorch XNNPACK",
                  "onnx-int8": "ONNX Runtime int8", "executorch-per-group": "ExecuTorch XNNPACK, per-group"}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a SCHEMA result, read from the package data."""
    from importlib.resources import files

    return json.loads(files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def model_labels(result: dict) -> dict[str, str]:
    """arch -> its name in the tables and the plot: the public model's ("BERT-base"), or
    "BERT (custom config)" for random weights at a --config-ARCH size (not BERT-base's figures)."""
    custom = result["config"].get("config_overrides") or {}
    return {arch: f"{FAMILIES[arch]} (custom config)" if arch in custom else label for arch, label in LABELS.items()}


def write_json(result: dict, path: str | os.PathLike) -> None:
    """Write the result as indented JSON (reportfile.write_report: atomic for a file, straight
    into a FIFO or device)."""
    write_report(path, json.dumps(result, indent=2) + "\n")


# (header, float format) of each column of the terminal table, in order.
COLUMNS = (("runtime", ""), ("model", ""), ("seq", ""), ("p50 ms", ".2f"), ("p90 ms", ".2f"), ("min ms", ".2f"),
           ("first", ".1f"), ("load", ".0f"), ("seq/s", ".1f"), ("GFLOP", ".2f"), ("GF/s", ".1f"), ("%ceil", ".1f"),
           ("size MB", ".1f"), ("+RSS MB", ".0f"), ("ratio", ""), ("wait%", ".0f"))


def table(result: dict) -> str:
    """The rows as a terminal table (tabulate, plain text: readable in a terminal and in a log
    file alike), then the ceiling, machine and skipped runtimes."""
    from tabulate import tabulate

    cells = [[r["runtime"], r["model"], r["seq_len"], r["p50_ms"], r["p90_ms"], r["min_ms"], r["first_run_ms"],
              r["load_ms"], r["throughput_seq_per_s"], r["flops"] / 1e9, r["gflops_per_s"], r["pct_of_ceiling"],
              r["file_bytes"] / 1e6, r["rss_increase_mb"],
              f"{r['ratio_bert_over_squeezebert']:.2f}x" if r["ratio_bert_over_squeezebert"] else None,
              r["cpu_wait_pct"]] for r in result["rows"]]
    lines = [tabulate(cells, headers=[h for h, _ in COLUMNS], floatfmt=[f for _, f in COLUMNS], missingval="-",
                      tablefmt="simple", colalign=["left", "left"] + ["right"] * (len(COLUMNS) - 2))]
    m, c, names = result["machine"], result["ceiling"], model_labels(result)
    lines.append(f"ratio = {names['bert']} p50 / {names['squeezebert']} p50 at the same runtime and shape; "
                 "first and load in ms; "
                 "+RSS = peak RSS increase of a fresh process loading that model; wait% = time our threads "
                 "waited for a CPU during the timed runs (near 0 on a quiet machine)")
    each = f"; each library: {libraries_text(c)}" if libraries_text(c) else ""
    lines.append(f"sgemm ceiling {c['gflops']:.1f} GFLOP/s ({c['op']}, {c['threads']} threads{each}); "
                 f"{m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or '-'}; "
                 f"batch {result['config']['batch']}, {result['config']['runs']} runs")
    lines.append(result["method"]["verified"])
    lines += int8_speedups(result)
    lines += [f"skipped {s['runtime']} ({s['model']}): {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines)


def int8_speedups(result: dict) -> list[str]:
    """One line per int8 runtime and length that ran beside its fp32 runtime: each model's fp32
    p50 over its int8 p50 (the ratio column already compares the two models' int8 files)."""
    p50 = {(r["runtime"], r["model"], r["seq_len"]): r["p50_ms"] for r in result["rows"]}
    names, lines = model_labels(result), []
    for fp32, int8 in INT8_RUNTIMES.items():
        for seq_len in result["config"]["seq_lens"]:
            ups = [f"{names[m]} {p50[fp32, m, seq_len] / p50[int8, m, seq_len]:.2f}x" for m in LABELS
                   if (fp32, m, seq_len) in p50 and (int8, m, seq_len) in p50]
            if ups:
                lines.append(f"int8 speed-up over fp32 ({int8} / {fp32}, p50), seq {seq_len}: {', '.join(ups)}")
    return lines


def markdown_table(result: dict, seq_lens=None) -> str:
    """Per sequence length: runtime | SqueezeBERT p50 | BERT-base p50 | ratio | GFLOP/s of each."""
    seq_lens = seq_lens or result["config"]["seq_lens"]
    by_key = {(r["runtime"], r["model"], r["seq_len"]): r for r in result["rows"]}
    runtimes = list(dict.fromkeys(r["runtime"] for r in result["rows"]))
    names = model_labels(result)
    sb_name, bert_name = names["squeezebert"], names["bert"]
    lines = []
    for seq_len in seq_lens:
        lines += [f"Batch {result['config']['batch']}, sequence {seq_len}, {result['config']['threads']} threads, "
                  f"fp32, median of {result['config']['runs']} interleaved runs:", "",
                  f"| runtime | {sb_name} | {bert_name} | ratio | {sb_name} GFLOP/s | {bert_name} GFLOP/s |",
                  "|---|---|---|---|---|---|"]
        for rt in runtimes:
            sb, bert = by_key.get((rt, "squeezebert", seq_len)), by_key.get((rt, "bert", seq_len))
            cells = [RUNTIME_LABELS[rt],
                     f"{sb['p50_ms']:.1f} ms" if sb else "-", f"{bert['p50_ms']:.1f} ms" if bert else "-",
                     f"{sb['ratio_bert_over_squeezebert']:.2f}x" if sb and bert else "-",
                     f"{sb['gflops_per_s']:.0f}" if sb else "-", f"{bert['gflops_per_s']:.0f}" if bert else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    c = result["ceiling"]
    each = f"; each library: {libraries_text(c)}" if libraries_text(c) else ""
    lines.append(f"sgemm ceiling: {c['gflops']:.0f} GFLOP/s ({c['op']}, {c['threads']} threads{each}).")
    waits = [r["cpu_wait_pct"] for r in result["rows"] if r["cpu_wait_pct"] is not None]
    if waits:
        lines.append(f"CPU wait during the timed runs (time our threads waited for a core, % of wall time): "
                     f"{min(waits):.0f} to {max(waits):.0f}% (near 0 on a quiet machine).")
    return "\n".join(lines) + "\n"


# Characters of the plot's title per line: a device's title (SoC, serial, EMULATED) ran past
# the right edge of the 8-inch figure at 10 pt.
TITLE_WIDTH = 80


def plot(result: dict, path: str | os.PathLike) -> None:
    """p50 latency against sequence length (log-log), one line per runtime and model, the band
    from min to p90 shaded; PNG at `path` (reportfile.write_report)."""
    fig = figure(result)             # first: it picks the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_report(path, buffer.getvalue())


def figure(result: dict):
    """The plot of `plot` as a matplotlib Figure (Agg), for the caller to save and close."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    colors = {"eager": "tab:blue", "onnx": "tab:orange", "executorch": "tab:green", "onnx-int8": "tab:red",
              "executorch-per-group": "tab:olive"}
    styles = {"squeezebert": ("-", "o"), "bert": ("--", "s")}
    names = model_labels(result)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for (rt, model) in dict.fromkeys((r["runtime"], r["model"]) for r in result["rows"]):
        rows = sorted((r for r in result["rows"] if r["runtime"] == rt and r["model"] == model),
                      key=lambda r: r["seq_len"])
        xs = [r["seq_len"] for r in rows]
        line, marker = styles[model]
        ax.plot(xs, [r["p50_ms"] for r in rows], line, marker=marker, color=colors[rt],
                label=f"{names[model]}, {RUNTIME_LABELS[rt]}")
        ax.fill_between(xs, [r["min_ms"] for r in rows], [r["p90_ms"] for r in rows], color=colors[rt], alpha=0.12)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    seq_lens = sorted({r["seq_len"] for r in result["rows"]})
    ax.set_xticks(seq_lens, [str(s) for s in seq_lens])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("latency p50 (ms), band min..p90")
    m, cfg = result["machine"], result["config"]
    dtypes = "fp32 and int8" if any(r["runtime"] in INT8_RUNTIMES.values() for r in result["rows"]) else "fp32"
    title = f"{cfg['task']}, batch {cfg['batch']}, {cfg['threads']} threads, {dtypes} - {m['cpu']}"
    ax.set_title(textwrap.fill(title, TITLE_WIDTH), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
